package logcheck_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/castellan-dev/castellan/agent/logcheck"
	"github.com/prometheus/client_golang/prometheus"
)

// fixture is a log, two witnesses and a policy needing both.
type fixture struct {
	skey, vkey string
	log        *testLog
	w1, w2     *cosigner
	src        *source
	dir        string
}

func newFixture(t *testing.T, entries int) *fixture {
	t.Helper()
	f := &fixture{w1: newCosigner(t, "w1.test/a"), w2: newCosigner(t, "w2.test/b"), dir: t.TempDir()}
	f.skey, f.vkey = newLogKey(t)
	f.log = newTestLog(t, f.skey, f.vkey, "honest").grow(entries)
	f.src = &source{log: f.log}
	f.src.serveNow(t, f.w1, f.w2)
	return f
}

func (f *fixture) checker(t *testing.T, reg *prometheus.Registry) *logcheck.Checker {
	return newChecker(t, policyOf(t, 2, f.w1, f.w2), f.vkey, f.src, openCache(t, f.dir), reg)
}

func (f *fixture) cert(i uint64) logcheck.Cert {
	return logcheck.Cert{Index: idx(i), DER: f.log.der(i)}
}

func TestProveInclusionAndPersist(t *testing.T) {
	f := newFixture(t, 7)
	reg := prometheus.NewRegistry()
	c := f.checker(t, reg)
	for i, err := range c.Prove(context.Background(), []logcheck.Cert{f.cert(0), f.cert(3), f.cert(6)}) {
		if err != nil {
			t.Fatalf("cert %d: %v", i, err)
		}
	}
	if c.Accepted() != 7 {
		t.Fatalf("accepted size %d, want 7", c.Accepted())
	}
	if got := counter(t, reg, "castellan_agent_log_proofs_total", "proven"); got != 3 {
		t.Fatalf("proven counter %v, want 3", got)
	}
	// Grow: the next proof goes through a consistency proof from 7.
	f.log.grow(30)
	f.src.serveNow(t, f.w1, f.w2)
	if err := c.Prove(context.Background(), []logcheck.Cert{f.cert(35)})[0]; err != nil {
		t.Fatal(err)
	}
	if c.Accepted() != 37 {
		t.Fatalf("accepted size %d, want 37", c.Accepted())
	}
}

func TestProveWaitsForWitnessing(t *testing.T) {
	f := newFixture(t, 4)
	c := f.checker(t, nil)
	f.log.grow(1) // index 4 exists but the witnessed checkpoint is of 4
	f.src.before = func(call int) {
		if call == 3 { // witnessed on the third call
			f.src.serveLocked(t, f.w1, f.w2)
		}
	}
	if err := c.Prove(context.Background(), []logcheck.Cert{f.cert(4)})[0]; err != nil {
		t.Fatal(err)
	}
	if f.src.calls != 3 {
		t.Fatalf("%d calls, want 3 (polled until witnessed)", f.src.calls)
	}
}

func TestProveTimesOutWhenNeverWitnessed(t *testing.T) {
	f := newFixture(t, 4)
	reg := prometheus.NewRegistry()
	c := f.checker(t, reg)
	f.log.grow(1)
	err := c.Prove(context.Background(), []logcheck.Cert{f.cert(4)})[0]
	if !errors.Is(err, logcheck.ErrNotWitnessed) || !strings.Contains(err.Error(), "does not cover log index 4") {
		t.Fatalf("err = %v, want ErrNotWitnessed saying index 4 is not covered", err)
	}
	if got := counter(t, reg, "castellan_agent_log_proofs_total", "timeout"); got != 1 {
		t.Fatalf("timeout counter %v, want 1", got)
	}
}

func TestNotLoggedRefused(t *testing.T) {
	f := newFixture(t, 2)
	c := f.checker(t, nil)
	err := c.Prove(context.Background(), []logcheck.Cert{{DER: []byte("x")}})[0]
	if !errors.Is(err, logcheck.ErrNotLogged) {
		t.Fatalf("err = %v, want ErrNotLogged", err)
	}
}

// A certificate the CA signed but did not log: the CA claims the index of
// another certificate's entry, or puts a forged entry in the proof.
func TestUnloggedCertificateRefused(t *testing.T) {
	f := newFixture(t, 5)
	c := f.checker(t, nil)
	forged := logcheck.Cert{Index: idx(2), DER: []byte("a certificate that is not in the log")}
	err := c.Prove(context.Background(), []logcheck.Cert{forged})[0]
	if !errors.Is(err, logcheck.ErrBadProof) || !strings.Contains(err.Error(), "another certificate") {
		t.Fatalf("err = %v, want ErrBadProof (entry holds another certificate)", err)
	}
	// An entry forged to hold the certificate: its hash is not in the tree.
	bad := &source{log: &testLog{tree: f.log.tree, data: append([][]byte(nil), f.log.data...)}}
	bad.log.data[2] = []byte(`{"v":1,"index":2,"kind":"issuance","cert":"` + b64(forged.DER) + `"}`)
	bad.cp, bad.size = f.src.cp, f.src.size
	c2 := newChecker(t, policyOf(t, 2, f.w1, f.w2), f.vkey, bad, openCache(t, t.TempDir()), nil)
	err = c2.Prove(context.Background(), []logcheck.Cert{forged})[0]
	if !errors.Is(err, logcheck.ErrBadProof) || !strings.Contains(err.Error(), "not in the witnessed tree") {
		t.Fatalf("err = %v, want ErrBadProof (leaf not in the tree)", err)
	}
}

func TestEntryChecks(t *testing.T) {
	f := newFixture(t, 0)
	der := []byte("cert")
	for name, e := range map[string]string{
		"version 2":  `{"v":2,"index":0,"kind":"issuance","cert":"` + b64(der) + `"}`,
		"no version": `{"index":0,"kind":"issuance","cert":"` + b64(der) + `"}`,
		"moved":      `{"v":1,"index":7,"kind":"issuance","cert":"` + b64(der) + `"}`,
		"revocation": `{"v":1,"index":0,"kind":"revocation","cert":"` + b64(der) + `"}`,
		"not json":   `{"v":1,`,
	} {
		t.Run(name, func(t *testing.T) {
			l := newTestLog(t, f.skey, f.vkey, "x")
			l.appendRaw([]byte(e))
			src := &source{log: l}
			src.serveNow(t, f.w1, f.w2)
			c := newChecker(t, policyOf(t, 2, f.w1, f.w2), f.vkey, src, openCache(t, t.TempDir()), nil)
			err := c.Prove(context.Background(), []logcheck.Cert{{Index: idx(0), DER: der}})[0]
			if !errors.Is(err, logcheck.ErrBadProof) {
				t.Fatalf("err = %v, want ErrBadProof", err)
			}
		})
	}
}

func b64(b []byte) string { return base64Std(b) }
