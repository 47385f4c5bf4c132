package integration_test

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/castellan-dev/castellan/integration/testbin"
)

// demoTTL is short enough that the agent rotates every SVID (at about half
// its lifetime) several times within the test.
const demoTTL = 60 * time.Second

// demoHopRow matches one hop of the product page's identity table.
var demoHopRow = regexp.MustCompile(`<tr class="hop" data-from="([a-z]+)" data-to="([a-z]+)" data-server-id="([^"]*)" data-server-serial="([0-9a-f]*)" data-client-id="([^"]*)" data-client-serial="([0-9a-f]*)" data-error="([^"]*)">`)

// TestDemoBookinfoOverMTLSSurvivesRotation runs the `make demo` launcher
// and checks the "done when": the product page is whole on every
// request across at least two rotations, every hop's certificates (on the
// Workload API and the SDS paths) change with each rotation, identities
// that are not allowed are refused, and a real browser renders the page.
func TestDemoBookinfoOverMTLSSurvivesRotation(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole demo for about two minutes")
	}
	d := demoStart(t, demoTTL)
	t.Run("rotation without failed requests", func(t *testing.T) { demoHammer(t, d) })
	t.Run("identities not allowed are refused", func(t *testing.T) { demoRefusals(t, d) })
	t.Run("browser", func(t *testing.T) { demoBrowser(t, d) })
}

// demoSides are the six certificates the page reports: both ends of each
// hop. Those of reviews and ratings come over SDS, the others over the
// Workload API.
var demoSides = []string{
	"productpage->details server", "productpage->details client",
	"productpage->reviews server", "productpage->reviews client",
	"reviews->ratings server", "reviews->ratings client",
}

// demoHammer requests /productpage until every certificate on every hop
// has been seen in three versions (two rotations), requiring every response
// to be whole.
func demoHammer(t *testing.T, d *demoLauncher) {
	client := &http.Client{Timeout: 10 * time.Second}
	seen := map[string][]string{} // side -> distinct serials, in order seen
	start := time.Now()
	deadline := start.Add(4 * demoTTL)
	requests := 0
	for ; requests < 5000 && time.Now().Before(deadline); requests++ {
		body := demoGetPage(t, client, d.demoURL()+"/productpage?refresh=0")
		for side, serial := range demoSerials(t, body) {
			if s := seen[side]; len(s) == 0 || s[len(s)-1] != serial {
				seen[side] = append(s, serial)
			}
		}
		if t.Failed() || demoRotatedTwice(seen) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	elapsed := time.Since(start)
	t.Logf("%d requests in %s, all whole; serials seen per hop side: %v", requests+1, elapsed.Round(time.Second), seen)
	if !demoRotatedTwice(seen) {
		t.Fatalf("within %s not every certificate rotated twice: %v\n%s", 4*demoTTL, seen, d.demoLogs())
	}
	// The agent renews at about half the lifetime; far more certificates
	// than that means it re-issues in a loop (a rotation storm).
	limit := int(elapsed/(demoTTL/4)) + 2
	for side, serials := range seen {
		if len(serials) > limit {
			t.Errorf("%s: %d certificates in %s, more than the %d a renewal at about half of a %s lifetime allows",
				side, len(serials), elapsed.Round(time.Second), limit, demoTTL)
		}
	}
}

// demoRotatedTwice reports whether every side has shown three distinct
// serials.
func demoRotatedTwice(seen map[string][]string) bool {
	for _, side := range demoSides {
		distinct := map[string]bool{}
		for _, s := range seen[side] {
			distinct[s] = true
		}
		if len(distinct) < 3 {
			return false
		}
	}
	return true
}

// demoGetPage fetches the product page and checks it is whole: 200, book
// details, both reviews with stars from ratings, no error shown.
func demoGetPage(t *testing.T, client *http.Client, url string) string {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	body := string(b)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s = %s\n%s", url, resp.Status, body)
	}
	for _, want := range []string{"ISBN-13", "123-1234567890", "Reviewer1", "Reviewer2", `data-stars="5"`, `data-stars="4"`} {
		if !strings.Contains(body, want) {
			t.Errorf("product page lacks %q", want)
		}
	}
	if strings.Contains(body, `class="error"`) {
		t.Errorf("product page shows an error:\n%s", body)
	}
	return body
}

// demoSerials returns the serial of each side of each hop on a page, and
// checks each side is the identity the authorization rules expect.
func demoSerials(t *testing.T, body string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, m := range demoHopRow.FindAllStringSubmatch(body, -1) {
		hop := m[1] + "->" + m[2]
		if m[7] != "" {
			t.Errorf("hop %s failed: %s", hop, m[7])
		}
		if want := "spiffe://cluster.local/ns/default/sa/bookinfo-" + m[2]; m[3] != want {
			t.Errorf("hop %s: server identity %q, want %q", hop, m[3], want)
		}
		if want := "spiffe://cluster.local/ns/default/sa/bookinfo-" + m[1]; m[5] != want {
			t.Errorf("hop %s: client identity %q, want %q", hop, m[5], want)
		}
		out[hop+" server"], out[hop+" client"] = m[4], m[6]
	}
	if len(out) != len(demoSides) {
		t.Errorf("product page shows %d hop sides, want %d: %v", len(out), len(demoSides), out)
	}
	return out
}

// demoRefusals registers an identity for this test process that no rule
// allows, fetches it from the agent with go-spiffe, and checks that details
// (Workload API-fed) and ratings (SDS-fed) refuse it, and refuse a client
// with no certificate.
func demoRefusals(t *testing.T, d *demoLauncher) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	intruder := spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/bookinfo-intruder")
	var b testbin.Builder
	t.Cleanup(b.Cleanup)
	ctl := b.Path(t, "castellanctl")
	out, err := exec.Command(ctl, "--admin-socket", filepath.Join(d.dir, "server", "admin.sock"), "entry", "create",
		"--spiffe-id", intruder.String(), "--node", "demo-node", "--selector", "unix:path:"+exe,
		"--selector", "unix:uid:"+strconv.Itoa(os.Getuid())).CombinedOutput()
	if err != nil {
		t.Fatalf("castellanctl entry create: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(
		workloadapi.WithAddr("unix://"+filepath.Join(d.dir, "agent.sock"))))
	if err != nil {
		t.Fatalf("no SVID for the test process from the agent: %v\n%s", err, d.demoLogs())
	}
	defer src.Close()
	if svid, err := src.GetX509SVID(); err != nil || svid.ID != intruder {
		t.Fatalf("agent gave the test process %v (%v), want %s", svid, err, intruder)
	}
	for _, c := range []struct{ service, addr, path string }{
		{"details", d.demoPort(1), "/details/0"},
		{"ratings", d.demoPort(2), "/ratings/0"},
	} {
		server := spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/bookinfo-" + c.service)
		withID := tlsconfig.MTLSClientConfig(src, src, tlsconfig.AuthorizeID(server))
		noCert := tlsconfig.TLSClientConfig(src, tlsconfig.AuthorizeID(server))
		demoExpectRefused(t, c.service+" with identity "+intruder.String(), withID, "https://"+c.addr+c.path)
		demoExpectRefused(t, c.service+" without a certificate", noCert, "https://"+c.addr+c.path)
	}
}

// demoExpectRefused calls url with cfg and requires the server to refuse
// the client's certificate with a TLS alert. The client verifies the
// server's SVID first, so the refusal is the server's decision.
func demoExpectRefused(t *testing.T, what string, cfg *tls.Config, url string) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}}
	resp, err := client.Get(url)
	if err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Errorf("%s: answered %s %s; want the connection refused", what, resp.Status, b)
		return
	}
	if msg := err.Error(); !strings.Contains(msg, "bad certificate") && !strings.Contains(msg, "certificate required") {
		t.Errorf("%s: failed with %v; want a TLS alert refusing the client certificate", what, err)
		return
	}
	t.Logf("%s: refused (%v)", what, err)
}
