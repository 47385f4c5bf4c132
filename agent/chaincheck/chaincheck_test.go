package chaincheck

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// path says which way a Checker must decide a chain.
type path int

const (
	anyPath  path = iota
	fastPath      // accepted by the shortcut
	fullPath      // handed to x509svid.Verify
)

// chainCase is one chain, the bundle and time it is verified with, and
// the verdict x509svid.Verify gives.
type chainCase struct {
	name   string
	certs  []*x509.Certificate
	bundle *x509bundle.Bundle
	now    time.Time
	ok     bool
	path   path
}

// fixture is the PKI the table is built from.
type fixture struct {
	root, inter *authority
}

func newFixture(t testing.TB) *fixture {
	root := newRoot(t, "root", nil)
	return &fixture{root: root, inter: newIntermediate(t, root, "inter", nil)}
}

// impostor is parent's certificate (subject, key identifier) with another
// key, to sign a leaf parent's certificate did not sign.
func impostor(t testing.TB, parent *authority) *authority {
	cert := &x509.Certificate{Subject: parent.cert.Subject, RawSubject: parent.cert.RawSubject, SubjectKeyId: parent.cert.SubjectKeyId}
	return &authority{cert: cert, key: newKey(t)}
}

// leafCases are chains whose intermediate is the fixture's (good or bad
// leaves): the shortcut sees a remembered intermediate for all of them.
func leafCases(t testing.TB, f *fixture) []chainCase {
	good := newLeaf(t, f.inter, nil)
	b := bundleOf(f.root)
	leaf := func(change func(*x509.Certificate)) []*x509.Certificate {
		return []*x509.Certificate{newLeaf(t, f.inter, change), f.inter.cert}
	}
	return []chainCase{
		{name: "good chain", certs: []*x509.Certificate{good, f.inter.cert}, bundle: b, now: base, ok: true, path: fastPath},
		{name: "at the leaf's NotAfter", certs: []*x509.Certificate{good, f.inter.cert}, bundle: b, now: good.NotAfter, ok: true, path: fastPath},
		{name: "at the leaf's NotBefore", certs: []*x509.Certificate{good, f.inter.cert}, bundle: b, now: good.NotBefore, ok: true, path: fastPath},
		{name: "a second after the leaf's NotAfter", certs: []*x509.Certificate{good, f.inter.cert}, bundle: b, now: good.NotAfter.Add(time.Second)},
		{name: "a nanosecond after the leaf's NotAfter", certs: []*x509.Certificate{good, f.inter.cert}, bundle: b, now: good.NotAfter.Add(time.Nanosecond)},
		{name: "before the leaf's NotBefore", certs: []*x509.Certificate{good, f.inter.cert}, bundle: b, now: good.NotBefore.Add(-time.Second)},
		{name: "leaf signed by another key than the intermediate's", certs: []*x509.Certificate{newLeaf(t, impostor(t, f.inter), nil), f.inter.cert}, bundle: b, now: base},
		{name: "leaf is a CA", certs: leaf(func(c *x509.Certificate) { c.IsCA = true }), bundle: b, now: base},
		{name: "leaf may sign certificates", certs: leaf(func(c *x509.Certificate) { c.KeyUsage |= x509.KeyUsageCertSign }), bundle: b, now: base},
		{name: "leaf may sign CRLs", certs: leaf(func(c *x509.Certificate) { c.KeyUsage |= x509.KeyUsageCRLSign }), bundle: b, now: base},
		{name: "leaf without key usage", certs: leaf(func(c *x509.Certificate) { c.KeyUsage = 0 }), bundle: b, now: base, ok: true, path: fastPath},
		{name: "leaf without extended key usage", certs: leaf(func(c *x509.Certificate) { c.ExtKeyUsage = nil }), bundle: b, now: base, ok: true, path: fastPath},
		{name: "leaf for code signing only", certs: leaf(func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning} }), bundle: b, now: base, ok: true, path: fastPath},
		{name: "leaf with two URI SANs", certs: leaf(func(c *x509.Certificate) {
			c.URIs = append(c.URIs, spiffeid.RequireFromPath(td, "/x").URL())
		}), bundle: b, now: base},
		{name: "leaf without URI SAN", certs: leaf(func(c *x509.Certificate) { c.URIs = nil; c.DNSNames = []string{"w.example"} }), bundle: b, now: base},
		{name: "leaf with a URI that is no SPIFFE ID", certs: leaf(func(c *x509.Certificate) { c.URIs = []*url.URL{{Scheme: "https", Host: "cluster.local", Path: "/w"}} }), bundle: b, now: base},
		{name: "leaf of another trust domain", certs: leaf(func(c *x509.Certificate) { c.URIs = []*url.URL{spiffeid.RequireFromPath(other, "/w").URL()} }), bundle: b, now: base},
		{name: "leaf with an unhandled critical extension", certs: leaf(func(c *x509.Certificate) { c.ExtraExtensions = []pkix.Extension{criticalExt} }), bundle: b, now: base},
		{name: "leaf with name constraints", certs: leaf(func(c *x509.Certificate) { c.PermittedURIDomains = []string{"other.example"} }), bundle: b, now: base, ok: true, path: fullPath},
		{name: "leaf requiring an explicit policy", certs: leaf(func(c *x509.Certificate) { c.ExtraExtensions = []pkix.Extension{requireExplicitPolicy0} }), bundle: b, now: base},
		{name: "leaf issued under another name by the intermediate's key", certs: []*x509.Certificate{
			newLeaf(t, &authority{cert: &x509.Certificate{Subject: pkix.Name{CommonName: "not inter"}}, key: f.inter.key}, nil), f.inter.cert,
		}, bundle: b, now: base},
		{name: "leaf alone", certs: []*x509.Certificate{good}, bundle: b, now: base, path: fullPath},
		{name: "no certificate", bundle: b, now: base, path: fullPath},
		{name: "leaf, intermediate and root", certs: []*x509.Certificate{good, f.inter.cert, f.root.cert}, bundle: b, now: base, ok: true, path: fullPath},
		{name: "leaf and root", certs: []*x509.Certificate{good, f.root.cert}, bundle: b, now: base, path: fullPath},
		{name: "intermediate twice", certs: []*x509.Certificate{good, f.inter.cert, f.inter.cert}, bundle: b, now: base, ok: true, path: fullPath},
		{name: "bundle without the root", certs: []*x509.Certificate{good, f.inter.cert}, bundle: bundleOf(newRoot(t, "root", nil)), now: base},
		{name: "empty bundle", certs: []*x509.Certificate{good, f.inter.cert}, bundle: x509bundle.New(td), now: base},
		{name: "bundle of another trust domain", certs: []*x509.Certificate{good, f.inter.cert}, bundle: x509bundle.FromX509Authorities(other, []*x509.Certificate{f.root.cert}), now: base},
		{name: "zero time", certs: []*x509.Certificate{good, f.inter.cert}, bundle: b, path: fullPath},
	}
}

// requireExplicitPolicy0 is a policy constraints extension requiring an
// explicit policy at once: a chain without policies fails crypto/x509's
// policy check.
var requireExplicitPolicy0 = pkix.Extension{Id: oidPolicyConstraints, Value: []byte{0x30, 0x03, 0x80, 0x01, 0x00}}

// authorityCases are chains whose intermediate or root is unusual.
func authorityCases(t testing.TB, f *fixture) []chainCase {
	b := bundleOf(f.root)
	under := func(change func(*x509.Certificate)) []*x509.Certificate {
		inter := newIntermediate(t, f.root, "inter", change)
		return []*x509.Certificate{newLeaf(t, inter, nil), inter.cert}
	}
	underRoot := func(change func(*x509.Certificate)) ([]*x509.Certificate, *x509bundle.Bundle) {
		root := newRoot(t, "root", change)
		inter := newIntermediate(t, root, "inter", nil)
		return []*x509.Certificate{newLeaf(t, inter, nil), inter.cert}, bundleOf(root)
	}
	v1 := newV1Intermediate(t, f.root, "inter")
	cases := []chainCase{
		{name: "version 1 intermediate", certs: []*x509.Certificate{newLeaf(t, v1, nil), v1.cert}, bundle: b, now: base},
		{name: "intermediate not a CA", certs: under(func(c *x509.Certificate) { c.IsCA = false }), bundle: b, now: base},
		{name: "intermediate without basic constraints", certs: under(func(c *x509.Certificate) { c.BasicConstraintsValid, c.IsCA = false, false }), bundle: b, now: base},
		{name: "intermediate may not sign certificates", certs: under(func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageDigitalSignature }), bundle: b, now: base},
		{name: "intermediate with path length 0", certs: under(func(c *x509.Certificate) { c.MaxPathLen, c.MaxPathLenZero = 0, true }), bundle: b, now: base, ok: true, path: fastPath},
		{name: "intermediate with an unhandled critical extension", certs: under(func(c *x509.Certificate) { c.ExtraExtensions = []pkix.Extension{criticalExt} }), bundle: b, now: base},
		{name: "intermediate not yet valid", certs: under(func(c *x509.Certificate) { c.NotBefore = base.Add(time.Second) }), bundle: b, now: base},
		{name: "intermediate expired", certs: under(func(c *x509.Certificate) { c.NotAfter = base.Add(-time.Second) }), bundle: b, now: base},
		{name: "intermediate excluding the trust domain", certs: under(func(c *x509.Certificate) { c.ExcludedURIDomains = []string{"cluster.local"} }), bundle: b, now: base, path: fullPath},
		{name: "intermediate permitting the trust domain", certs: under(func(c *x509.Certificate) { c.PermittedURIDomains = []string{"cluster.local"} }), bundle: b, now: base, ok: true, path: fullPath},
		{name: "intermediate requiring an explicit policy", certs: under(func(c *x509.Certificate) { c.ExtraExtensions = []pkix.Extension{requireExplicitPolicy0} }), bundle: b, now: base, path: fullPath},
		{name: "intermediate with a policy", certs: under(func(c *x509.Certificate) { c.Policies = []x509.OID{mustOID(t, "1.2.3.4")} }), bundle: b, now: base, ok: true, path: fastPath},
	}
	for _, rc := range []struct {
		name   string
		change func(*x509.Certificate)
		ok     bool
		path   path
	}{
		{"root with name constraints the leaf violates", func(c *x509.Certificate) { c.PermittedURIDomains = []string{"other.example"} }, false, fullPath},
		{"root with name constraints the leaf meets", func(c *x509.Certificate) { c.PermittedURIDomains = []string{"cluster.local"} }, true, fullPath},
		{"root with DNS name constraints only", func(c *x509.Certificate) { c.PermittedDNSDomains = []string{"example.com"} }, true, fullPath},
		{"root with path length 0", func(c *x509.Certificate) { c.MaxPathLen, c.MaxPathLenZero = 0, true }, false, anyPath},
		{"root with path length 1", func(c *x509.Certificate) { c.MaxPathLen = 1 }, true, fastPath},
		{"root requiring an explicit policy", func(c *x509.Certificate) { c.ExtraExtensions = []pkix.Extension{requireExplicitPolicy0} }, true, fullPath},
		{"root with an unhandled critical extension", func(c *x509.Certificate) { c.ExtraExtensions = []pkix.Extension{criticalExt} }, false, anyPath},
		{"root may not sign certificates", func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageDigitalSignature }, false, anyPath},
		{"root not a CA", func(c *x509.Certificate) { c.IsCA = false }, false, anyPath},
		{"root expired", func(c *x509.Certificate) { c.NotAfter = base.Add(-time.Second) }, false, anyPath},
		{"root not yet valid", func(c *x509.Certificate) { c.NotBefore = base.Add(time.Second) }, false, anyPath},
	} {
		certs, rb := underRoot(rc.change)
		cases = append(cases, chainCase{name: rc.name, certs: certs, bundle: rb, now: base, ok: rc.ok, path: rc.path})
	}
	return append(cases, forgedCases(t, f)...)
}

// forgedCases are chains an attacker could build: intermediates and roots
// named like the fixture's, with other keys.
func forgedCases(t testing.TB, f *fixture) []chainCase {
	b := bundleOf(f.root)
	rogueRoot := newRoot(t, "root", nil)
	forged := newIntermediate(t, rogueRoot, "inter", nil)
	selfSigned := newRoot(t, "inter", nil)
	// cross is the root's subject and key, as an intermediate signed by
	// the root: crypto/x509 skips it and finds the root directly.
	cross := &authority{cert: create(t, func() *x509.Certificate {
		c := caTemplate("root", 12*time.Hour)
		c.RawSubject = f.root.cert.RawSubject
		return c
	}(), f.root.key.Public(), f.root, nil), key: f.root.key}
	many := bundleOf(f.root)
	for i := range MaxRoots {
		many.AddX509Authority(newRoot(t, fmt.Sprintf("extra %d", i), nil).cert)
	}
	deeper := newIntermediate(t, f.inter, "deeper", nil)
	return []chainCase{
		{name: "forged intermediate: same subject, another key, under a rogue root", certs: []*x509.Certificate{newLeaf(t, forged, nil), forged.cert}, bundle: b, now: base},
		{name: "forged intermediate, self-signed", certs: []*x509.Certificate{newLeaf(t, selfSigned, nil), selfSigned.cert}, bundle: b, now: base},
		{name: "leaf of a forged intermediate with the real one", certs: []*x509.Certificate{newLeaf(t, forged, nil), f.inter.cert}, bundle: b, now: base},
		{name: "real leaf with a forged intermediate", certs: []*x509.Certificate{newLeaf(t, f.inter, nil), forged.cert}, bundle: b, now: base},
		{name: "rogue root in the bundle too", certs: []*x509.Certificate{newLeaf(t, forged, nil), forged.cert}, bundle: bundleOf(f.root, rogueRoot), now: base, ok: true, path: fastPath},
		{name: "intermediate with the root's subject and key", certs: []*x509.Certificate{newLeaf(t, cross, nil), cross.cert}, bundle: b, now: base, ok: true, path: fullPath},
		{name: "two intermediates", certs: []*x509.Certificate{newLeaf(t, deeper, nil), deeper.cert, f.inter.cert}, bundle: b, now: base, ok: true, path: fullPath},
		{name: "two intermediates, the upper one missing", certs: []*x509.Certificate{newLeaf(t, deeper, nil), deeper.cert}, bundle: b, now: base},
		{name: "more roots than MaxRoots", certs: []*x509.Certificate{newLeaf(t, f.inter, nil), f.inter.cert}, bundle: many, now: base, ok: true, path: fullPath},
	}
}

func mustOID(t testing.TB, s string) x509.OID {
	t.Helper()
	oid, err := x509.ParseOID(s)
	if err != nil {
		t.Fatal(err)
	}
	return oid
}

// check verifies tc with c and with x509svid.Verify and fails t unless the
// verdicts, and the errors, are the same and as tc says.
func check(t *testing.T, c *Checker, tc chainCase) {
	t.Helper()
	fast, full := c.fast.Load(), c.full.Load()
	got := c.Verify(tc.certs, tc.bundle, tc.now)
	_, _, want := x509svid.Verify(tc.certs, tc.bundle, x509svid.WithTime(tc.now))
	if (got == nil) != (want == nil) || (got != nil && got.Error() != want.Error()) {
		t.Fatalf("%s: Checker says %v, x509svid.Verify says %v", tc.name, got, want)
	}
	if (got == nil) != tc.ok {
		t.Fatalf("%s: verdict %v, want accepted=%v", tc.name, got, tc.ok)
	}
	tookFast, tookFull := c.fast.Load()-fast, c.full.Load()-full
	if tookFast+tookFull != 1 {
		t.Fatalf("%s: counted %d shortcuts and %d full verifications for one chain", tc.name, tookFast, tookFull)
	}
	switch {
	case tc.path == fastPath && tookFast != 1:
		t.Fatalf("%s: decided by x509svid.Verify, want the shortcut", tc.name)
	case tc.path == fullPath && tookFull != 1, !tc.ok && tookFull != 1:
		t.Fatalf("%s: decided by the shortcut, want x509svid.Verify", tc.name)
	}
}

// TestVerdictIsX509SVIDs: for every chain of the table, with a fresh
// Checker and with one that has seen every other chain, the verdict and
// the error are x509svid.Verify's, and good chains of the usual shape take
// the shortcut.
func TestVerdictIsX509SVIDs(t *testing.T) {
	f := newFixture(t)
	cases := append(leafCases(t, f), authorityCases(t, f)...)
	shared := &Checker{}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			check(t, &Checker{}, tc)
			check(t, shared, tc)
			check(t, shared, tc) // remembered now, if it was accepted
		})
	}
}

// TestRememberedIntermediateStillNeedsItsValidity: an intermediate (and a
// root) remembered while valid is refused once expired, for a leaf that is
// still valid.
func TestRememberedIntermediateStillNeedsItsValidity(t *testing.T) {
	root := newRoot(t, "root", func(c *x509.Certificate) { c.NotAfter = base.Add(2 * time.Hour) })
	inter := newIntermediate(t, root, "inter", func(c *x509.Certificate) { c.NotAfter = base.Add(10 * time.Minute) })
	long := func(c *x509.Certificate) { c.NotAfter = base.Add(3 * time.Hour) }
	b := bundleOf(root)
	c := &Checker{}
	chain := []*x509.Certificate{newLeaf(t, inter, long), inter.cert}
	check(t, c, chainCase{name: "while valid", certs: chain, bundle: b, now: base, ok: true, path: fastPath})
	check(t, c, chainCase{name: "intermediate expired since", certs: chain, bundle: b, now: inter.cert.NotAfter.Add(time.Second)})
	// The root expires after the intermediate here; a second intermediate
	// outlives the root.
	inter2 := newIntermediate(t, root, "inter 2", func(c *x509.Certificate) { c.NotAfter = base.Add(5 * time.Hour) })
	chain2 := []*x509.Certificate{newLeaf(t, inter2, long), inter2.cert}
	check(t, c, chainCase{name: "second intermediate", certs: chain2, bundle: b, now: base, ok: true, path: fastPath})
	check(t, c, chainCase{name: "root expired since", certs: chain2, bundle: b, now: root.cert.NotAfter.Add(time.Second)})
	check(t, c, chainCase{name: "valid again at an earlier time", certs: chain2, bundle: b, now: base.Add(time.Minute), ok: true, path: fastPath})
}

// TestBundleChangeForgetsIntermediates: once the bundle no longer holds
// the root that signed a remembered intermediate (a new bundle, or the
// same bundle changed in place), its chains are refused.
func TestBundleChangeForgetsIntermediates(t *testing.T) {
	f := newFixture(t)
	next := newRoot(t, "next root", nil)
	chain := []*x509.Certificate{newLeaf(t, f.inter, nil), f.inter.cert}
	c := &Checker{}
	b := bundleOf(f.root, next)
	check(t, c, chainCase{name: "both roots", certs: chain, bundle: b, now: base, ok: true, path: fastPath})
	check(t, c, chainCase{name: "new bundle without the root", certs: chain, bundle: bundleOf(next), now: base})
	check(t, c, chainCase{name: "old bundle again", certs: chain, bundle: b, now: base, ok: true, path: fastPath})
	b.RemoveX509Authority(f.root.cert)
	check(t, c, chainCase{name: "root removed in place", certs: chain, bundle: b, now: base})
	if len(c.verified) != 0 {
		t.Fatalf("%d intermediates remembered for a bundle that signed none", len(c.verified))
	}
	// A root with the old root's name but another key signs nothing the
	// old one signed.
	b.AddX509Authority(newRoot(t, "root", nil).cert)
	check(t, c, chainCase{name: "root replaced by a namesake", certs: chain, bundle: b, now: base})
}

// TestLeafOfAnotherKeyUnderARememberedIntermediate: remembering an
// intermediate does not make its name sign anything: a leaf signed by
// another key under its name is refused, however often it is presented.
func TestLeafOfAnotherKeyUnderARememberedIntermediate(t *testing.T) {
	f := newFixture(t)
	b := bundleOf(f.root)
	c := &Checker{}
	check(t, c, chainCase{name: "good", certs: []*x509.Certificate{newLeaf(t, f.inter, nil), f.inter.cert}, bundle: b, now: base, ok: true, path: fastPath})
	bad := []*x509.Certificate{newLeaf(t, impostor(t, f.inter), nil), f.inter.cert}
	for i := range 3 {
		check(t, c, chainCase{name: fmt.Sprintf("impostor %d", i), certs: bad, bundle: b, now: base})
	}
}

// TestRememberedIntermediatesAreBounded: more distinct intermediates than
// MaxRemembered are all verified, and the Checker never holds more than
// MaxRemembered.
func TestRememberedIntermediatesAreBounded(t *testing.T) {
	root := newRoot(t, "root", nil)
	b := bundleOf(root)
	c := &Checker{}
	for i := range MaxRemembered + 5 {
		inter := newIntermediate(t, root, fmt.Sprintf("inter %d", i), nil)
		check(t, c, chainCase{name: inter.cert.Subject.CommonName, certs: []*x509.Certificate{newLeaf(t, inter, nil), inter.cert}, bundle: b, now: base, ok: true, path: fastPath})
		if n := len(c.verified); n > MaxRemembered || n == 0 {
			t.Fatalf("after %d intermediates, %d remembered; want 1..%d", i+1, n, MaxRemembered)
		}
	}
}

// TestConcurrentVerify: callers on several goroutines share a Checker
// (run with -race); each gets the right verdict.
func TestConcurrentVerify(t *testing.T) {
	f := newFixture(t)
	b := bundleOf(f.root)
	good := []*x509.Certificate{newLeaf(t, f.inter, nil), f.inter.cert}
	bad := []*x509.Certificate{newLeaf(t, impostor(t, f.inter), nil), f.inter.cert}
	c := &Checker{}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Go(func() {
			if err := c.Verify(good, b, base); err != nil {
				errs <- fmt.Errorf("goroutine %d: good chain refused: %w", i, err)
			}
			if c.Verify(bad, b, base) == nil {
				errs <- fmt.Errorf("goroutine %d: impostor accepted", i)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestNoBundle: without a bundle nothing is accepted (x509svid.Verify
// would panic on a nil *Bundle).
func TestNoBundle(t *testing.T) {
	f := newFixture(t)
	err := (&Checker{}).Verify([]*x509.Certificate{newLeaf(t, f.inter, nil), f.inter.cert}, nil, base)
	if err == nil || err.Error() != "chaincheck: no trust bundle to verify the chain against" {
		t.Fatalf("Verify without a bundle: %v", err)
	}
}
