package rotation_test

import (
	"crypto"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/authority"
	"github.com/castellan-dev/castellan/ca/authority/internal/pkitest"
	"github.com/castellan-dev/castellan/ca/authority/journal"
	"google.golang.org/grpc/codes"
)

// cacerts is a plug-in CA directory in Istio's layout.
type cacerts struct {
	t   *testing.T
	dir string
}

func newCacerts(t *testing.T, e *journalEnv) *cacerts {
	return newCacertsIn(t, e, "cacerts")
}

// newCacertsIn points e's config at a cacerts directory of its own name.
func newCacertsIn(t *testing.T, e *journalEnv, name string) *cacerts {
	dir := filepath.Join(e.dir, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	e.cfg.RootCertFile = filepath.Join(dir, "root-cert.pem")
	e.cfg.IntermediateCertFile = filepath.Join(dir, "cert-chain.pem")
	e.cfg.IntermediateKeyFile = filepath.Join(dir, "ca-key.pem")
	return &cacerts{t: t, dir: dir}
}

// write replaces the files: roots in root-cert.pem, the intermediate in
// ca-cert.pem and cert-chain.pem (with its root), its key in ca-key.pem.
func (c *cacerts) write(inter *pluginCA, roots ...*pluginCA) {
	c.t.Helper()
	var rs []*x509.Certificate
	for _, r := range roots {
		rs = append(rs, r.cert)
	}
	pkitest.WritePEM(c.t, c.dir, "root-cert.pem", rs...)
	pkitest.WritePEM(c.t, c.dir, "ca-cert.pem", inter.cert)
	pkitest.WritePEM(c.t, c.dir, "cert-chain.pem", inter.cert, inter.parent.cert)
	pkitest.WriteKey(c.t, c.dir, "ca-key.pem", inter.key)
}

// pluginCA is a root or an intermediate of an operator's PKI.
type pluginCA struct {
	cert   *x509.Certificate
	key    crypto.Signer
	parent *pluginCA
}

func (c *cacerts) root(now time.Time) *pluginCA {
	c.t.Helper()
	key, cert, err := pkitest.NewRoot(testTD, now, jRootTTL)
	if err != nil {
		c.t.Fatal(err)
	}
	return &pluginCA{cert: cert, key: key}
}

func (c *cacerts) intermediate(now time.Time, root *pluginCA) *pluginCA {
	c.t.Helper()
	key, cert, err := pkitest.NewIntermediate(testTD, now, jInterTTL, root.cert, root.key)
	if err != nil {
		c.t.Fatal(err)
	}
	return &pluginCA{cert: cert, key: key, parent: root}
}

func signedBy(t *testing.T, a *authority.Authority, inter *pluginCA) {
	t.Helper()
	if iss := signLeaf(t, a); !iss.Chain[1].Equal(inter.cert) {
		t.Fatalf("leaf signed by %s, want %s", journal.AuthorityID(iss.Chain[1]), journal.AuthorityID(inter.cert))
	}
}

func TestPluginPicksUpANewIntermediateUnderAPublishedRootWithoutRestart(t *testing.T) {
	e := newJournalEnv(t)
	files := newCacerts(t, e)
	r1 := files.root(e.clock.Now())
	i1 := files.intermediate(e.clock.Now(), r1)
	files.write(i1, r1)
	a := e.open()
	signedBy(t, a, i1)
	tick(t, a)
	if tr := e.transitions(); len(tr) != 1 || tr[0].Authority.Source != journal.SourcePlugin {
		t.Fatalf("start transitions %+v", tr)
	}

	e.clock.Advance(jDelay)
	i2 := files.intermediate(e.clock.Now(), r1)
	files.write(i2, r1)
	changed := a.Changed()
	tick(t, a)
	select {
	case <-changed:
	default:
		t.Fatal("Changed did not fire when the files' intermediate was activated")
	}
	signedBy(t, a, i2)
	wantStates(t, a, journal.StateOld, journal.StateActive)
	tick(t, a)
	if tr := e.transitions(); len(tr) != 3 {
		t.Fatalf("transitions %+v, want prepared, old, active", tr)
	}
}

func TestPluginPublishesEveryRootAndActivatesTheNewIntermediateAfterTheDelay(t *testing.T) {
	e := newJournalEnv(t)
	files := newCacerts(t, e)
	r1 := files.root(e.clock.Now())
	i1 := files.intermediate(e.clock.Now(), r1)
	files.write(i1, r1)
	a := e.open()
	e.transitions()

	e.clock.Advance(time.Minute)
	r2 := files.root(e.clock.Now())
	files.write(i1, r1, r2) // the new root first, beside the old intermediate
	tick(t, a)
	if s := a.Snapshot(); len(s.Roots) != 2 || !s.Roots[1].Equal(r2.cert) {
		t.Fatalf("bundle after adding a root: %d roots", len(s.Roots))
	}
	tr := e.transitions()
	if len(tr) != 1 || tr[0].From != journal.StateActive || tr[0].To != journal.StateActive || !strings.Contains(tr[0].Reason, "root file") {
		t.Fatalf("transitions %+v", tr)
	}
	if in := tr[0].Authority; !in.ActivatedAt.Equal(in.PreparedAt) {
		t.Fatalf("a root file change restamped the activation time: %v, activated at start %v", in.ActivatedAt, in.PreparedAt)
	}
	signedBy(t, a, i1)

	e.clock.Advance(jDelay)
	i3 := files.intermediate(e.clock.Now(), r2)
	files.write(i3, r2) // the old root leaves the file
	tick(t, a)
	signedBy(t, a, i3)
	s := a.Snapshot()
	if len(s.Roots) != 2 {
		t.Fatalf("bundle %d roots: the old root must stay while its authority is old", len(s.Roots))
	}
}

func TestPluginIntermediateUnderAnUnpublishedRootIsRefused(t *testing.T) {
	e := newJournalEnv(t)
	files := newCacerts(t, e)
	r1 := files.root(e.clock.Now())
	i1 := files.intermediate(e.clock.Now(), r1)
	files.write(i1, r1)
	reg := newRegistry()
	e.cfg.Registry = reg
	a := e.open()

	r2 := files.root(e.clock.Now())
	i2 := files.intermediate(e.clock.Now(), r2)
	files.write(i2, r2) // everything replaced at once
	err := a.Tick(ctx)
	wantRefused(t, err, codes.FailedPrecondition, journal.AuthorityID(i2.cert), "publish delay", e.clock.Now().Add(jDelay).UTC().Format(time.RFC3339), "keeps signing")
	if v := metricValue(t, reg, "castellan_ca_authority_refusals_total", "reason", "root_not_published"); v != 1 {
		t.Errorf("refusal metric %v", v)
	}
	signedBy(t, a, i1)
	if s := a.Snapshot(); len(s.Roots) != 2 {
		t.Fatalf("bundle %d roots: the new root must be published while the old one signs", len(s.Roots))
	}
	tick(t, a) // the same files: no new error
	signedBy(t, a, i1)

	e.clock.Advance(jDelay - time.Second)
	tick(t, a)
	signedBy(t, a, i1)
	e.clock.Advance(time.Second)
	tick(t, a)
	signedBy(t, a, i2)
}

func TestPluginRestartDuringTheWaitSignsWithTheFiles(t *testing.T) {
	e := newJournalEnv(t)
	files := newCacerts(t, e)
	r1 := files.root(e.clock.Now())
	i1 := files.intermediate(e.clock.Now(), r1)
	files.write(i1, r1)
	a := e.open()
	r2 := files.root(e.clock.Now())
	i2 := files.intermediate(e.clock.Now(), r2)
	files.write(i2, r2)
	if err := a.Tick(ctx); err == nil {
		t.Fatal("want a refusal")
	}
	restarted := e.open() // the old key is gone with the old files
	signedBy(t, restarted, i2)
	if len(restarted.Snapshot().Roots) != 2 {
		t.Fatal("the old root left the bundle at restart")
	}
}

func TestPluginInvalidFilesAreRefusedAndTheOldKeepsSigning(t *testing.T) {
	e := newJournalEnv(t)
	files := newCacerts(t, e)
	r1 := files.root(e.clock.Now())
	i1 := files.intermediate(e.clock.Now(), r1)
	files.write(i1, r1)
	a := e.open()
	i2 := files.intermediate(e.clock.Now(), r1)
	pkitest.WriteKey(t, files.dir, "ca-key.pem", i2.key) // key without its certificate
	err := a.Tick(ctx)
	if err == nil || !strings.Contains(err.Error(), "does not match") || !strings.Contains(err.Error(), "keeps signing") {
		t.Fatalf("mismatched key: %v", err)
	}
	signedBy(t, a, i1)
	tick(t, a)
	if err := os.Remove(e.cfg.RootCertFile); err != nil {
		t.Fatal(err)
	}
	if err := a.Tick(ctx); err == nil || !strings.Contains(err.Error(), "keeps signing") {
		t.Fatalf("missing root file: %v", err)
	}
	signedBy(t, a, i1)
}

func TestPluginFilesOfATaintedAuthorityAreRefused(t *testing.T) {
	e := newJournalEnv(t)
	files := newCacerts(t, e)
	r1 := files.root(e.clock.Now())
	i1 := files.intermediate(e.clock.Now(), r1)
	files.write(i1, r1)
	a := e.open()
	e.clock.Advance(jDelay)
	i2 := files.intermediate(e.clock.Now(), r1)
	files.write(i2, r1)
	tick(t, a)
	if _, err := a.Taint(ctx, journal.AuthorityID(i1.cert)); err != nil {
		t.Fatal(err)
	}
	files.write(i1, r1) // rolled back to the tainted intermediate
	err := a.Tick(ctx)
	wantRefused(t, err, codes.FailedPrecondition, "tainted", "new intermediate")
	signedBy(t, a, i2)
	_, err = a.Prepare(ctx, false)
	wantRefused(t, err, codes.FailedPrecondition, "replacing")
}

// TestPluginReplicaWhoseFilesLagKeepsSigningThenFollows: two replicas share
// the journal, each with its own copy of the files (a Secret reaches pods
// at different times). The one whose files lag keeps signing with the
// previous intermediate, still trusted, and switches once its files hold
// the new key.
func TestPluginReplicaWhoseFilesLagKeepsSigningThenFollows(t *testing.T) {
	e := newJournalEnv(t)
	filesA := newCacertsIn(t, e, "a")
	r1 := filesA.root(e.clock.Now())
	i1 := filesA.intermediate(e.clock.Now(), r1)
	filesA.write(i1, r1)
	e.cfg.Journal = sharedDB{e.db}
	a := e.open()
	filesB := newCacertsIn(t, e, "b")
	filesB.write(i1, r1)
	b := e.open()

	e.clock.Advance(jDelay)
	i2 := filesA.intermediate(e.clock.Now(), r1)
	filesA.write(i2, r1)
	tick(t, a)
	signedBy(t, a, i2)
	err := b.Tick(ctx)
	if err == nil || !strings.Contains(err.Error(), "not in this replica's files") {
		t.Fatalf("lagging replica's Tick: %v", err)
	}
	signedBy(t, b, i1)
	filesB.write(i2, r1)
	tick(t, b)
	signedBy(t, b, i2)
}
