package chaincheck

import (
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// fuzzPKI is what FuzzVerify draws from: roots that may be in the bundle
// and authorities (good and bad intermediates, impostors, roots) that may
// be in the chain, name the leaf's issuer or sign it.
type fuzzPKI struct {
	roots   []*authority
	auths   []*authority
	leafKey crypto.Signer
}

func newFuzzPKI(t testing.TB) *fuzzPKI {
	root := newRoot(t, "root", func(c *x509.Certificate) { c.NotAfter = base.Add(20 * time.Hour) })
	rogue := newRoot(t, "root", nil)
	nc := newRoot(t, "root", func(c *x509.Certificate) { c.PermittedURIDomains = []string{"other.example"} })
	ncOK := newRoot(t, "root", func(c *x509.Certificate) { c.PermittedURIDomains = []string{"cluster.local"} })
	pathLen0 := newRoot(t, "root", func(c *x509.Certificate) { c.MaxPathLen, c.MaxPathLenZero = 0, true })
	shortRoot := newRoot(t, "root", func(c *x509.Certificate) { c.NotAfter = base.Add(20 * time.Minute) })
	policy := newRoot(t, "root", func(c *x509.Certificate) { c.ExtraExtensions = []pkix.Extension{requireExplicitPolicy0} })
	p := &fuzzPKI{roots: []*authority{root, rogue, nc, ncOK, pathLen0, shortRoot, policy}, leafKey: newKey(t)}
	good := newIntermediate(t, root, "inter", nil)
	cross := &authority{cert: create(t, func() *x509.Certificate {
		c := caTemplate("root", 12*time.Hour)
		c.RawSubject = root.cert.RawSubject
		return c
	}(), root.key.Public(), root, nil), key: root.key}
	p.auths = []*authority{
		good,
		newIntermediate(t, root, "inter", func(c *x509.Certificate) { c.NotAfter = base.Add(10 * time.Minute) }),
		newIntermediate(t, root, "inter", func(c *x509.Certificate) { c.ExcludedURIDomains = []string{"cluster.local"} }),
		newIntermediate(t, root, "inter", func(c *x509.Certificate) { c.IsCA = false }),
		newIntermediate(t, root, "inter", func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageDigitalSignature }),
		newIntermediate(t, root, "inter", func(c *x509.Certificate) { c.ExtraExtensions = []pkix.Extension{criticalExt} }),
		newIntermediate(t, root, "inter", func(c *x509.Certificate) { c.ExtraExtensions = []pkix.Extension{requireExplicitPolicy0} }),
		newIntermediate(t, root, "inter", func(c *x509.Certificate) { c.MaxPathLen, c.MaxPathLenZero = 0, true }),
		newIntermediate(t, rogue, "inter", nil),
		newIntermediate(t, nc, "inter", nil),
		newIntermediate(t, ncOK, "inter", nil),
		newIntermediate(t, pathLen0, "inter", nil),
		newIntermediate(t, shortRoot, "inter", nil),
		newIntermediate(t, policy, "inter", nil),
		newIntermediate(t, good, "deeper", nil),
		newRoot(t, "inter", nil),
		cross,
	}
	p.auths = append(p.auths, p.roots...)
	return p
}

// choices reads a fuzz input one byte at a time (0 once it is used up).
type choices []byte

func (c *choices) next(n int) int {
	if len(*c) == 0 {
		return 0
	}
	b := (*c)[0]
	*c = (*c)[1:]
	return int(b) % n
}

var (
	fuzzOffsets = []time.Duration{0, time.Second, -2 * time.Minute, 9 * time.Minute, 11 * time.Minute, 21 * time.Minute,
		time.Hour - time.Second, time.Hour, time.Hour + time.Nanosecond, 3 * time.Hour, 13 * time.Hour, 21 * time.Hour, -time.Hour - time.Second}
	fuzzLifetimes = []time.Duration{time.Hour, 5 * time.Minute, 3 * time.Hour, 30 * time.Hour, -time.Minute}
)

// chain builds the chain, bundle and time the input describes.
func (p *fuzzPKI) chain(t *testing.T, in choices) ([]*x509.Certificate, *x509bundle.Bundle, time.Time) {
	inter := p.auths[in.next(len(p.auths))]
	name, signer := inter, inter
	if in.next(2) == 1 {
		name = p.auths[in.next(len(p.auths))]
	}
	if in.next(2) == 1 {
		signer = p.auths[in.next(len(p.auths))]
	}
	parent := &authority{cert: &x509.Certificate{Subject: name.cert.Subject, RawSubject: name.cert.RawSubject, SubjectKeyId: name.cert.SubjectKeyId}, key: signer.key}
	leaf := create(t, fuzzLeafTemplate(&in), p.leafKey.Public(), parent, nil)
	certs := []*x509.Certificate{leaf}
	switch in.next(5) {
	case 1:
	case 2:
		certs = append(certs, inter.cert, p.auths[in.next(len(p.auths))].cert)
	default:
		certs = append(certs, inter.cert)
	}
	td := td
	if in.next(8) == 7 {
		td = other
	}
	b := x509bundle.New(td)
	// The first root (the good one) is in unless the input says not.
	for mask, i := in.next(1<<len(p.roots))^1, 0; i < len(p.roots); i++ {
		if mask&(1<<i) != 0 {
			b.AddX509Authority(p.roots[i].cert)
		}
	}
	return certs, b, base.Add(fuzzOffsets[in.next(len(fuzzOffsets))])
}

// fuzzLeafTemplate is a leaf whose flags and lifetime the input chooses.
func fuzzLeafTemplate(in *choices) *x509.Certificate {
	tmpl := leafTemplate(spiffeid.RequireFromPath(td, "/w"))
	flags := in.next(256)
	tmpl.IsCA = flags&1 != 0
	if flags&2 != 0 {
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	}
	if flags&4 != 0 {
		tmpl.KeyUsage |= x509.KeyUsageCRLSign
	}
	switch {
	case flags&8 != 0:
		tmpl.URIs = append(tmpl.URIs, spiffeid.RequireFromPath(td, "/x").URL())
	case flags&16 != 0:
		tmpl.URIs = nil
	case flags&32 != 0:
		tmpl.URIs = []*url.URL{spiffeid.RequireFromPath(other, "/w").URL()}
	}
	if flags&64 != 0 {
		tmpl.ExtraExtensions = []pkix.Extension{criticalExt}
	}
	if flags&128 != 0 {
		tmpl.PermittedURIDomains = []string{"other.example"}
	}
	tmpl.NotAfter = base.Add(fuzzLifetimes[in.next(len(fuzzLifetimes))])
	return tmpl
}

// FuzzVerify: for any chain built from good and bad authorities, leaves
// with any mix of forbidden flags, any bundle of the roots and any time,
// a Checker that has seen every earlier input gives x509svid.Verify's
// verdict and error, twice (the second time from what it remembered).
func FuzzVerify(f *testing.F) {
	for _, seed := range [][]byte{
		{}, {0, 0, 0, 0, 0, 0, 1}, {1, 0, 0, 0, 0, 0, 0, 4}, {2}, {8}, {9}, {14, 0, 0, 0, 0, 0, 2, 0, 1},
		{0, 0, 1, 8, 0}, {0, 1, 15, 0, 0}, {0, 0, 0, 1}, {0, 0, 0, 8}, {0, 0, 0, 128}, {0, 0, 0, 0, 4, 0, 0, 0, 2},
		{16}, {0, 0, 0, 0, 0, 0, 0, 0, 0, 2}, {0, 0, 0, 0, 0, 0, 0, 0, 0, 7}, {10, 0, 0, 0, 0, 0, 0, 0, 0, 8},
	} {
		f.Add(seed)
	}
	p := newFuzzPKI(f)
	c := &Checker{}
	f.Fuzz(func(t *testing.T, in []byte) {
		certs, b, now := p.chain(t, in)
		_, _, want := x509svid.Verify(certs, b, x509svid.WithTime(now))
		for range 2 {
			got := c.Verify(certs, b, now)
			if (got == nil) != (want == nil) || (got != nil && got.Error() != want.Error()) {
				t.Fatalf("Checker says %v, x509svid.Verify says %v", got, want)
			}
		}
	})
}

// TestFuzzCorpusReachesBothPaths: FuzzVerify's checked-in corpus is worth
// replaying: it has chains the shortcut accepts, chains only the full
// verification accepts, and chains refused.
func TestFuzzCorpusReachesBothPaths(t *testing.T) {
	files, err := filepath.Glob("testdata/fuzz/FuzzVerify/*")
	if err != nil || len(files) < 50 {
		t.Fatalf("corpus: %d files, %v", len(files), err)
	}
	p := newFuzzPKI(t)
	c := &Checker{}
	var accepted, refused int
	for _, name := range files {
		in := readCorpusEntry(t, name)
		certs, b, now := p.chain(t, in)
		if c.Verify(certs, b, now) == nil {
			accepted++
		} else {
			refused++
		}
	}
	fast, full := c.fast.Load(), c.full.Load()
	if fast == 0 || full <= int64(refused) || accepted == 0 || refused == 0 {
		t.Fatalf("corpus of %d: %d accepted (%d by the shortcut), %d refused, %d fully verified", len(files), accepted, fast, refused, full)
	}
	t.Logf("corpus of %d: %d accepted (%d by the shortcut), %d refused", len(files), accepted, fast, refused)
}

// readCorpusEntry reads the one []byte of a "go test fuzz v1" file.
func readCorpusEntry(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != 2 || lines[0] != "go test fuzz v1" || !strings.HasPrefix(lines[1], "[]byte(") || !strings.HasSuffix(lines[1], ")") {
		t.Fatalf("%s is not a one-[]byte corpus entry", name)
	}
	s, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return []byte(s)
}
