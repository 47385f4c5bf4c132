package productpage_test

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/castellan-dev/castellan/integration/bookinfo/internal/catalog"
	"github.com/castellan-dev/castellan/integration/bookinfo/internal/details"
	"github.com/castellan-dev/castellan/integration/bookinfo/internal/hop"
	"github.com/castellan-dev/castellan/integration/bookinfo/internal/identity"
	"github.com/castellan-dev/castellan/integration/bookinfo/internal/identity/identitytest"
	"github.com/castellan-dev/castellan/integration/bookinfo/internal/productpage"
	"github.com/castellan-dev/castellan/integration/bookinfo/internal/ratings"
	"github.com/castellan-dev/castellan/integration/bookinfo/internal/reviews"
	"github.com/castellan-dev/castellan/integration/bookinfo/internal/server"
)

var td = spiffeid.RequireTrustDomainFromString("cluster.local")

// mesh is the four services on loopback, each with a settable identity.
type mesh struct {
	ca      *identitytest.CA
	src     map[string]*identitytest.Source
	addr    map[string]string
	page    http.Handler
	catalog *catalog.Catalog
}

func id(t *testing.T, svc string) spiffeid.ID {
	t.Helper()
	i, err := identity.Service(td, svc)
	if err != nil {
		t.Fatal(err)
	}
	return i
}

// serveTLS serves h over mTLS on 127.0.0.1:0 until the test ends.
func serveTLS(t *testing.T, h http.Handler, cfg *tls.Config) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = server.ServeListener(ctx, &http.Server{Handler: h, TLSConfig: cfg}, lis, server.Logger("test"))
	}()
	t.Cleanup(func() { cancel(); <-done })
	return "https://" + lis.Addr().String()
}

func newMesh(t *testing.T) *mesh {
	t.Helper()
	m := &mesh{ca: identitytest.NewCA(t, td), src: map[string]*identitytest.Source{}, addr: map[string]string{}, catalog: catalog.Default()}
	for _, svc := range []string{"productpage", "details", "reviews", "ratings"} {
		m.src[svc] = identitytest.NewSource(m.ca.Issue(t, id(t, svc), time.Hour), m.ca.Bundle())
	}
	m.addr["ratings"] = serveTLS(t, ratings.Handler(m.catalog), identity.ServerTLS(m.src["ratings"], id(t, "reviews")))
	rh, err := reviews.Handler(reviews.Config{Version: "v3", Catalog: m.catalog,
		Ratings: m.client(t, "reviews", "ratings")})
	if err != nil {
		t.Fatal(err)
	}
	m.addr["reviews"] = serveTLS(t, rh, identity.ServerTLS(m.src["reviews"], id(t, "productpage")))
	m.addr["details"] = serveTLS(t, details.Handler(m.catalog), identity.ServerTLS(m.src["details"], id(t, "productpage")))
	m.page, err = productpage.Handler(productpage.Config{Catalog: m.catalog,
		Details: m.client(t, "productpage", "details"), Reviews: []*hop.Client{m.client(t, "productpage", "reviews")}})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// client is a hop client from → to; the address is read lazily because
// ratings is started before reviews needs it.
func (m *mesh) client(t *testing.T, from, to string) *hop.Client {
	return &hop.Client{HTTP: identity.HTTPClient(m.src[from], id(t, to), 5*time.Second), BaseURL: m.addr[to], From: from, To: to}
}

func (m *mesh) get(t *testing.T, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	m.page.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Body.String()
}

var hopRow = regexp.MustCompile(`<tr class="hop" data-from="([a-z]+)" data-to="([a-z]+)" data-server-id="([^"]*)" data-server-serial="([0-9a-f]*)" data-client-id="([^"]*)" data-client-serial="([0-9a-f]*)" data-error="([^"]*)">`)

// hops returns "from->to" -> [server serial, client serial] from a page.
func hops(t *testing.T, body string) map[string][2]string {
	t.Helper()
	out := map[string][2]string{}
	for _, m := range hopRow.FindAllStringSubmatch(body, -1) {
		if m[7] != "" {
			t.Errorf("hop %s->%s failed: %s", m[1], m[2], m[7])
		}
		if !strings.HasSuffix(m[3], "bookinfo-"+m[2]) || !strings.HasSuffix(m[5], "bookinfo-"+m[1]) {
			t.Errorf("hop %s->%s shows server %s and client %s", m[1], m[2], m[3], m[5])
		}
		out[m[1]+"->"+m[2]] = [2]string{m[4], m[6]}
	}
	return out
}

func serialOf(t *testing.T, s *identitytest.Source) string {
	t.Helper()
	svid, err := s.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	return svid.Certificates[0].SerialNumber.Text(16)
}

func TestProductPageShowsBookAndCertificatesOfEveryHop(t *testing.T) {
	m := newMesh(t)
	code, body := m.get(t, "/productpage")
	if code != http.StatusOK {
		t.Fatalf("GET /productpage = %d\n%s", code, body)
	}
	for _, want := range []string{"The Comedy of Errors", "ISBN-10", "1234567890", "PublisherA", "Reviewer1", "Reviewer2",
		`class="stars red" data-stars="5"`, `data-stars="4"`, "reviews-v3"} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	got := hops(t, body)
	want := map[string][2]string{
		"productpage->details": {serialOf(t, m.src["details"]), serialOf(t, m.src["productpage"])},
		"productpage->reviews": {serialOf(t, m.src["reviews"]), serialOf(t, m.src["productpage"])},
		"reviews->ratings":     {serialOf(t, m.src["ratings"]), serialOf(t, m.src["reviews"])},
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("hop %s: serials (server, client) = %v, want %v", k, got[k], v)
		}
	}
}

func TestProductPageShowsRotatedCertificateOnNextRequest(t *testing.T) {
	m := newMesh(t)
	_, before := m.get(t, "/productpage")
	old := hops(t, before)["reviews->ratings"]
	m.src["ratings"].Set(m.ca.Issue(t, id(t, "ratings"), time.Hour))
	m.src["reviews"].Set(m.ca.Issue(t, id(t, "reviews"), time.Hour))
	_, after := m.get(t, "/productpage")
	now := hops(t, after)["reviews->ratings"]
	if now[0] == old[0] || now[1] == old[1] {
		t.Fatalf("reviews->ratings serials %v did not change after rotation (were %v)", now, old)
	}
	if now[0] != serialOf(t, m.src["ratings"]) || now[1] != serialOf(t, m.src["reviews"]) {
		t.Fatalf("reviews->ratings serials %v are not the rotated certificates", now)
	}
}

func TestServicesRefuseCallersNotAllowedByTheirRule(t *testing.T) {
	m := newMesh(t)
	intruder := func(svc string) *identitytest.Source {
		return identitytest.NewSource(m.ca.Issue(t, id(t, svc), time.Hour), m.ca.Bundle())
	}
	cases := []struct {
		name, to, path string
		as             *x509svid.SVID
	}{
		{"ratings identity calls details", "details", "/details/0", mustSVID(t, intruder("ratings"))},
		{"productpage identity calls ratings", "ratings", "/ratings/0", mustSVID(t, intruder("productpage"))},
		{"details identity calls reviews", "reviews", "/reviews/0", mustSVID(t, intruder("details"))},
		{"no certificate calls details", "details", "/details/0", nil},
		{"no certificate calls ratings", "ratings", "/ratings/0", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := identity.ClientTLS(identitytest.NewSource(c.as, m.ca.Bundle()), id(t, c.to))
			if c.as == nil {
				cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &tls.Certificate{}, nil }
			}
			client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
			resp, err := client.Get(m.addr[c.to] + c.path)
			if err == nil {
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				t.Fatalf("%s answered %s: %s", c.to, resp.Status, body)
			}
			if !strings.Contains(err.Error(), "bad certificate") && !strings.Contains(err.Error(), "certificate required") {
				t.Fatalf("refused with %v, want a TLS alert about the client certificate", err)
			}
		})
	}
}

func mustSVID(t *testing.T, s *identitytest.Source) *x509svid.SVID {
	t.Helper()
	svid, err := s.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	return svid
}

func TestRatingsAPIComesThroughReviews(t *testing.T) {
	m := newMesh(t)
	code, body := m.get(t, "/api/v1/products/0/ratings")
	if code != http.StatusOK || !strings.Contains(body, `"Reviewer1":5`) || !strings.Contains(body, `"to":"ratings"`) {
		t.Fatalf("GET /api/v1/products/0/ratings = %d %s", code, body)
	}
	if code, _ := m.get(t, "/api/v1/products/7"); code != http.StatusNotFound {
		t.Fatalf("unknown product answered %d, want 404", code)
	}
}
