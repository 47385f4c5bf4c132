package trust

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// newCert returns a certificate named cn, signed by parent's key (self-signed
// when parent is nil), and its key.
func newCert(t *testing.T, cn string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, key
}

// closed reports whether ch is closed.
func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// A new root gets the next sequence number and wakes the watchers; a
// change of the tainted authorities alone wakes them without a new
// bundle; nothing changed wakes nobody.
func TestBundleUpdateSequencesAndWakes(t *testing.T) {
	a, aKey := newCert(t, "root a", nil, nil)
	b, bKey := newCert(t, "root b", nil, nil)
	bd := NewBundle(x509bundle.FromX509Authorities(td, []*x509.Certificate{a}))
	pb, changed := bd.Watch()
	if pb.GetSequence() != 1 || len(pb.GetX509Authorities()) != 1 {
		t.Fatalf("first bundle: sequence %d, %d roots", pb.GetSequence(), len(pb.GetX509Authorities()))
	}
	if bd.Update(x509bundle.FromX509Authorities(td, []*x509.Certificate{a}), nil) || closed(changed) {
		t.Fatal("an unchanged bundle was published")
	}
	if bd.Update(x509bundle.FromX509Authorities(td, []*x509.Certificate{a}), [][]byte{b.Raw}) || !closed(changed) {
		t.Fatal("a new tainted authority did not wake the watchers, or made a new bundle")
	}
	if got, tainted, _ := bd.WatchAll(); got.GetSequence() != 1 || len(tainted) != 1 {
		t.Fatalf("after taint: sequence %d, %d tainted; want 1, 1", got.GetSequence(), len(tainted))
	}
	_, changed = bd.Watch()
	if !bd.Update(x509bundle.FromX509Authorities(td, []*x509.Certificate{a, b}), [][]byte{b.Raw}) || !closed(changed) {
		t.Fatal("a new root was not published")
	}
	if got := bd.Current(); got.GetSequence() != 2 || len(got.GetX509Authorities()) != 2 {
		t.Fatalf("after a new root: sequence %d, %d roots; want 2, 2", got.GetSequence(), len(got.GetX509Authorities()))
	}
	leaf, _ := newCert(t, "leaf under b", b, bKey)
	other, _ := newCert(t, "leaf elsewhere", a, aKey)
	if !bd.UnderTaint(leaf) || bd.UnderTaint(other) {
		t.Fatalf("UnderTaint: %v for a leaf of the tainted authority, %v for another; want true, false", bd.UnderTaint(leaf), bd.UnderTaint(other))
	}
}

// The client pool changes only when the roots do, and then holds exactly
// them.
func TestClientsFollowTheRoots(t *testing.T) {
	a, _ := newCert(t, "root a", nil, nil)
	b, _ := newCert(t, "root b", nil, nil)
	c := NewClients(&tls.Config{MinVersion: tls.VersionTLS13}, []*x509.Certificate{a})
	first := c.Config()
	c.Set([]*x509.Certificate{a})
	if c.Config() != first {
		t.Fatal("the same roots replaced the TLS configuration")
	}
	c.Set([]*x509.Certificate{a, b})
	want := x509.NewCertPool()
	want.AddCert(a)
	want.AddCert(b)
	if got := c.Config(); got == first || !got.ClientCAs.Equal(want) || got.MinVersion != tls.VersionTLS13 {
		t.Fatal("new roots: the pool does not hold exactly them, or the base configuration was lost")
	}
}
