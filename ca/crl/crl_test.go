package crl_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/castellan-dev/castellan/ca/authority"
	"github.com/castellan-dev/castellan/ca/crl"
	"github.com/castellan-dev/castellan/ca/ledger"
	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/internal/clock/clocktest"
)

// setup opens a real bbolt ledger holding three issuances (serials a1, a2,
// a3, valid for an hour) and an in-memory CA, sharing one manual clock.
func setup(t *testing.T) (*ledger.Ledger, *authority.Authority, *clocktest.Clock) {
	t.Helper()
	clk := clocktest.NewClock(time.Now().Truncate(time.Second))
	l, err := ledger.Open(filepath.Join(t.TempDir(), "ledger.db"), ledger.Config{Clock: clocktest.Func(clk.Now)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	for _, s := range []string{"a1", "a2", "a3"} {
		if _, err := l.Append(context.Background(), entry.Event{Kind: entry.KindIssuance, Serial: s,
			SPIFFEID: "spiffe://cluster.local/ns/default/sa/" + s, NotAfter: clk.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	a, err := authority.New(authority.Config{TrustDomain: spiffeid.RequireTrustDomainFromString("cluster.local"), Clock: clocktest.Func(clk.Now)})
	if err != nil {
		t.Fatal(err)
	}
	return l, a, clk
}

// fetch GETs the CRL and checks it is a DER CRL signed by issuer.
func fetch(t *testing.T, h http.Handler, issuer *x509.Certificate) *x509.RevocationList {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/crl", nil))
	if rec.Code != 200 || rec.Header().Get("Content-Type") != "application/pkix-crl" {
		t.Fatalf("GET /crl: %d %s %s", rec.Code, rec.Header().Get("Content-Type"), rec.Body.String())
	}
	list, err := x509.ParseRevocationList(rec.Body.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if err := list.CheckSignatureFrom(issuer); err != nil {
		t.Fatalf("CRL not signed by the signing intermediate: %v", err)
	}
	return list
}

func TestCRLListsRevokedSerialsSignedByTheCA(t *testing.T) {
	l, a, _ := setup(t)
	h := crl.New(l, a, crl.Config{Validity: time.Hour})
	if list := fetch(t, h, a.Intermediate()); len(list.RevokedCertificateEntries) != 0 {
		t.Fatalf("nothing revoked, CRL lists %d", len(list.RevokedCertificateEntries))
	}
	if _, err := l.Revoke(context.Background(), "a2", "keyCompromise"); err != nil {
		t.Fatal(err)
	}
	// The cached list must not survive a revocation.
	list := fetch(t, h, a.Intermediate())
	if len(list.RevokedCertificateEntries) != 1 {
		t.Fatalf("CRL entries = %+v, want serial a2", list.RevokedCertificateEntries)
	}
	e := list.RevokedCertificateEntries[0]
	if e.SerialNumber.Text(16) != "a2" || e.ReasonCode != 1 {
		t.Fatalf("CRL entry serial %x reason %d, want a2 keyCompromise (1)", e.SerialNumber, e.ReasonCode)
	}
	if !list.NextUpdate.Equal(list.ThisUpdate.Add(time.Hour)) {
		t.Fatalf("validity %s..%s, want one hour", list.ThisUpdate, list.NextUpdate)
	}
}

func TestCRLIsSignedAgainAtHalfItsValidityAndDropsExpiredCerts(t *testing.T) {
	l, a, clk := setup(t)
	if _, err := l.Revoke(context.Background(), "a1", "superseded"); err != nil {
		t.Fatal(err)
	}
	h := crl.New(l, a, crl.Config{Validity: 40 * time.Minute, Clock: clk})
	first := fetch(t, h, a.Intermediate())
	clk.Advance(19 * time.Minute)
	if again := fetch(t, h, a.Intermediate()); again.Number.Cmp(first.Number) != 0 {
		t.Fatalf("re-signed before half its validity: number %v then %v", first.Number, again.Number)
	}
	clk.Advance(2 * time.Minute)
	second := fetch(t, h, a.Intermediate())
	if second.Number.Cmp(first.Number) <= 0 || !second.ThisUpdate.Equal(clk.Now()) {
		t.Fatalf("past half its validity: number %v (was %v), thisUpdate %s, want a new list at %s",
			second.Number, first.Number, second.ThisUpdate, clk.Now())
	}
	clk.Advance(time.Hour) // a1 has expired: it leaves the list
	if list := fetch(t, h, a.Intermediate()); len(list.RevokedCertificateEntries) != 0 {
		t.Fatalf("expired certificate still listed: %+v", list.RevokedCertificateEntries)
	}
}

func TestCRLServesPEMAndRefusesOtherMethods(t *testing.T) {
	l, a, _ := setup(t)
	h := crl.New(l, a, crl.Config{})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/crl?format=pem", nil))
	block, _ := pem.Decode(rec.Body.Bytes())
	if block == nil || block.Type != "X509 CRL" {
		t.Fatalf("?format=pem: %q", rec.Body.String())
	}
	if _, err := x509.ParseRevocationList(block.Bytes); err != nil {
		t.Fatal(err)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/crl", nil))
	if rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") != "GET, HEAD" {
		t.Fatalf("POST: %d Allow %q", rec.Code, rec.Header().Get("Allow"))
	}
}

// failingSigner is a CA whose key cannot sign (an HSM that went away).
type failingSigner struct{ changed chan struct{} }

func (f failingSigner) SignCRL(*x509.RevocationList) ([]byte, error) {
	return nil, errors.New("the signing key is unavailable")
}
func (f failingSigner) Changed() <-chan struct{} { return f.changed }

func TestCRLSigningFailureIsA500WithoutDetail(t *testing.T) {
	l, _, _ := setup(t)
	h := crl.New(l, failingSigner{make(chan struct{})}, crl.Config{})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/crl", nil))
	if rec.Code != http.StatusInternalServerError || rec.Body.String() != "CRL unavailable\n" {
		t.Fatalf("failing signer: %d %q, want 500 without the cause", rec.Code, rec.Body.String())
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := h.CRL(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled context: %v", err)
	}
}

func TestReasonCode(t *testing.T) {
	for reason, want := range map[string]int{
		"keyCompromise": 1, "key_compromise": 1, "Key Compromise": 1, "CA-compromise": 2,
		"affiliationChanged": 3, "superseded": 4, "cessationOfOperation": 5, "certificateHold": 6,
		"privilegeWithdrawn": 9, "": 0, "the laptop was stolen": 0, "removeFromCRL": 0,
	} {
		if got := crl.ReasonCode(reason); got != want {
			t.Errorf("ReasonCode(%q) = %d, want %d", reason, got, want)
		}
	}
}

// countingSigner is the real CA, counting the lists it signs.
type countingSigner struct {
	*authority.Authority
	mu    sync.Mutex
	signs int
}

func (c *countingSigner) SignCRL(tmpl *x509.RevocationList) ([]byte, error) {
	c.mu.Lock()
	c.signs++
	c.mu.Unlock()
	return c.Authority.SignCRL(tmpl)
}

// TestCRLFloodIsServedFromOneSignature: a flood of concurrent GETs costs
// one signature, not one per request; a revocation costs one more.
func TestCRLFloodIsServedFromOneSignature(t *testing.T) {
	l, a, _ := setup(t)
	cs := &countingSigner{Authority: a}
	h := crl.New(l, cs, crl.Config{})
	flood := func() {
		var wg sync.WaitGroup
		for range 200 {
			wg.Go(func() {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest("GET", "/crl", nil))
				if rec.Code != http.StatusOK {
					t.Errorf("GET /crl: %d", rec.Code)
				}
			})
		}
		wg.Wait()
	}
	flood()
	if cs.signs != 1 {
		t.Fatalf("200 concurrent GETs signed %d lists, want 1", cs.signs)
	}
	if _, err := l.Revoke(context.Background(), "a3", "keyCompromise"); err != nil {
		t.Fatal(err)
	}
	flood()
	if cs.signs != 2 {
		t.Fatalf("after one revocation, %d lists signed in all, want 2", cs.signs)
	}
}
