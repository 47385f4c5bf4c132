package rotation_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"net/url"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/castellan-dev/castellan/ca/authority"
	"github.com/castellan-dev/castellan/ca/authority/internal/pkitest"
	"github.com/castellan-dev/castellan/ca/authority/journal"
	"github.com/castellan-dev/castellan/ca/authority/leaf"
	"github.com/castellan-dev/castellan/ca/store"
	"github.com/castellan-dev/castellan/ca/store/boltstore"
	"github.com/castellan-dev/castellan/internal/clock/clocktest"
)

// lockedClock is a settable clock safe for concurrent use.
type lockedClock struct {
	mu  sync.Mutex
	now time.Time
}

func newLockedClock() *lockedClock {
	return &lockedClock{now: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *lockedClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *lockedClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// Lifetimes of the journal tests: short, so that a rotation cycle is a few
// clock steps.
const (
	jRootTTL  = 100 * time.Hour
	jInterTTL = 10 * time.Hour
	jMaxTTL   = time.Hour
	jDelay    = 2 * time.Hour
)

// journalEnv is a CA with a journal on a real bbolt file.
type journalEnv struct {
	t     testing.TB
	clock *lockedClock
	dir   string
	db    *boltstore.DB
	cfg   authority.Config

	mu       sync.Mutex
	hooked   []journal.Transition
	hookFail error
}

func newJournalEnv(t testing.TB) *journalEnv {
	t.Helper()
	dir := t.TempDir()
	db, err := boltstore.Open(filepath.Join(dir, "store.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	e := &journalEnv{t: t, clock: newLockedClock(), dir: dir, db: db}
	e.cfg = authority.Config{
		TrustDomain: testTD, DataDir: filepath.Join(dir, "ca"), Journal: db,
		DefaultTTL: 30 * time.Minute, MaxTTL: jMaxTTL, RootTTL: jRootTTL, IntermediateTTL: jInterTTL,
		PublishDelay: jDelay, Clock: clocktest.Func(e.clock.Now), Logger: discardLogger(), OnTransition: e.hook,
	}
	return e
}

func (e *journalEnv) hook(_ context.Context, tr journal.Transition) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.hookFail != nil {
		return e.hookFail
	}
	e.hooked = append(e.hooked, tr)
	return nil
}

// transitions returns the transitions reported so far and forgets them.
func (e *journalEnv) transitions() []journal.Transition {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := e.hooked
	e.hooked = nil
	return out
}

func (e *journalEnv) open() *authority.Authority {
	e.t.Helper()
	a, err := authority.Open(context.Background(), e.cfg)
	if err != nil {
		e.t.Fatalf("Open: %v", err)
	}
	return a
}

// infoOf returns the journal's view of authority id.
func infoOf(t *testing.T, a *authority.Authority, id string) journal.Info {
	t.Helper()
	infos, err := a.Authorities(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range infos {
		if in.ID == id {
			return in
		}
	}
	t.Fatalf("authority %s not in the journal", id)
	return journal.Info{}
}

// statesOf returns the state of every authority, oldest first.
func statesOf(t *testing.T, a *authority.Authority) []journal.State {
	t.Helper()
	infos, err := a.Authorities(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []journal.State
	for _, in := range infos {
		out = append(out, in.State)
	}
	return out
}

// signLeaf signs a workload SVID and checks it chains to a root of the
// snapshot taken right after, at the signing time.
func signLeaf(t testing.TB, a *authority.Authority) *authority.Issued {
	t.Helper()
	iss, err := signOnce(a)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	if err := chainsToSnapshot(iss, a.Snapshot()); err != nil {
		t.Fatal(err)
	}
	return iss
}

func signOnce(a *authority.Authority) (*authority.Issued, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	u, _ := url.Parse("spiffe://example.org/ns/default/sa/workload")
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
	if err != nil {
		return nil, err
	}
	csr, err := a.ParseWorkloadCSR(der)
	if err != nil {
		return nil, err
	}
	return a.Sign(context.Background(), csr, csr.ID, 0)
}

// chainsToSnapshot verifies iss's chain against s's roots at its signing
// time.
func chainsToSnapshot(iss *authority.Issued, s authority.Snapshot) error {
	cert := iss.Chain[0]
	_, err := cert.Verify(x509.VerifyOptions{
		Roots: pkitest.PoolOf(s.Roots), Intermediates: pkitest.PoolOf(iss.Chain[1:]),
		CurrentTime: cert.NotBefore.Add(leaf.Backdate), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return errors.New("leaf signed by " + journal.AuthorityID(iss.Chain[1]) + " does not chain to the bundle of snapshot " + s.ActiveID + ": " + err.Error())
	}
	return nil
}

// sharedDB is a boltstore DB that claims to be shared, as a PostgreSQL
// keyspace is.
type sharedDB struct{ store.DB }

func (sharedDB) Shared() bool { return true }

func newRegistry() *prometheus.Registry { return prometheus.NewRegistry() }

// allStates are the states of an authority.
func allStates() []journal.State {
	return []journal.State{journal.StatePrepared, journal.StateActive, journal.StateOld, journal.StateTainted, journal.StateRevoked}
}

// metricValue returns the value of the gauge or counter name{labels}
// (label name, value, ...) gathered from reg, failing t if there is none.
func metricValue(t *testing.T, reg prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if got[labels[i]] != labels[i+1] {
					continue series
				}
			}
			if m.GetGauge() != nil {
				return m.GetGauge().GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("no series %s%v", name, labels)
	return 0
}
