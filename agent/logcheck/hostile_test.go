package logcheck_test

import (
	"context"
	"encoding/base64"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/agent/cache"
	"github.com/castellan-dev/castellan/agent/logcheck"
	"github.com/castellan-dev/castellan/internal/clock/clocktest"
	"github.com/prometheus/client_golang/prometheus"
)

func base64Std(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// A restarted agent keeps its accepted checkpoint: a CA (or an attacker
// in its place) that serves an older witnessed checkpoint cannot roll it
// back, and a certificate only in the older view is not proven.
func TestRollbackRefusedAcrossRestart(t *testing.T) {
	f := newFixture(t, 4)
	old := f.log.checkpoint(t, f.w1, f.w2)
	f.log.grow(6)
	f.src.serveNow(t, f.w1, f.w2)
	st, err := cache.Open(filepath.Join(f.dir, "cache.db"), cache.Config{})
	if err != nil {
		t.Fatal(err)
	}
	c := newChecker(t, policyOf(t, 2, f.w1, f.w2), f.vkey, f.src, st, nil)
	if err := c.Prove(context.Background(), []logcheck.Cert{f.cert(9)})[0]; err != nil {
		t.Fatal(err)
	}
	st.Close()
	// Restart on the same cache file, against a CA serving the old view.
	f.src.cp, f.src.size = func() []byte { return old }, func() uint64 { return 4 }
	restarted := newChecker(t, policyOf(t, 2, f.w1, f.w2), f.vkey, f.src, openCache(t, f.dir), nil)
	if restarted.Accepted() != 10 {
		t.Fatalf("restarted agent accepted size %d, want 10 from its cache", restarted.Accepted())
	}
	err = restarted.Prove(context.Background(), []logcheck.Cert{f.cert(2)})[0]
	if !errors.Is(err, logcheck.ErrNotWitnessed) || !strings.Contains(err.Error(), "not rolling back") {
		t.Fatalf("err = %v, want a refusal to roll back", err)
	}
	if restarted.Accepted() != 10 {
		t.Fatalf("accepted size fell to %d", restarted.Accepted())
	}
}

// A checkpoint that contradicts the accepted one — another tree, cosigned
// by the same witnesses (as if they were compromised) — is a fork: it is
// refused, counted, and every later proof is refused too.
func TestForkRefusedForGood(t *testing.T) {
	f := newFixture(t, 5)
	reg := prometheus.NewRegistry()
	c := f.checker(t, reg)
	if err := c.Prove(context.Background(), []logcheck.Cert{f.cert(1)})[0]; err != nil {
		t.Fatal(err)
	}
	other := newTestLog(t, f.skey, f.vkey, "rewritten").grow(9)
	f.src.mu.Lock()
	f.src.log = other
	f.src.serveLocked(t, f.w1, f.w2)
	f.src.mu.Unlock()
	err := c.Prove(context.Background(), []logcheck.Cert{{Index: idx(7), DER: other.der(7)}})[0]
	if !errors.Is(err, logcheck.ErrFork) {
		t.Fatalf("err = %v, want ErrFork", err)
	}
	if got := counter(t, reg, "castellan_agent_log_forks_total"); got != 1 {
		t.Fatalf("forks counter %v, want 1", got)
	}
	// The honest log again: still refused until the agent restarts.
	f.src.mu.Lock()
	f.src.log = f.log
	f.src.serveLocked(t, f.w1, f.w2)
	f.src.mu.Unlock()
	if err := c.Prove(context.Background(), []logcheck.Cert{f.cert(2)})[0]; !errors.Is(err, logcheck.ErrFork) {
		t.Fatalf("after a fork: err = %v, want ErrFork", err)
	}
	if c.Accepted() != 5 {
		t.Fatalf("accepted size %d, want 5", c.Accepted())
	}
}

// Same size, another root: a fork even without a proof to check.
func TestSameSizeOtherRootIsFork(t *testing.T) {
	f := newFixture(t, 5)
	c := f.checker(t, nil)
	if err := c.Prove(context.Background(), []logcheck.Cert{f.cert(1)})[0]; err != nil {
		t.Fatal(err)
	}
	other := newTestLog(t, f.skey, f.vkey, "rewritten").grow(5)
	f.src.mu.Lock()
	f.src.log = other
	f.src.serveLocked(t, f.w1, f.w2)
	f.src.mu.Unlock()
	if err := c.Prove(context.Background(), []logcheck.Cert{{Index: idx(3), DER: other.der(3)}})[0]; !errors.Is(err, logcheck.ErrFork) {
		t.Fatalf("err = %v, want ErrFork", err)
	}
}

// Forged checkpoints: too few cosignatures, a cosignature by an impostor
// key under a witness's name, a checkpoint signed by another log key, a
// future-dated cosignature. None is accepted; nothing is proven.
func TestForgedCheckpointRefused(t *testing.T) {
	f := newFixture(t, 6)
	impostor := newCosigner(t, f.w2.name)
	otherKey, _ := newLogKey(t)
	foreign := newTestLog(t, otherKey, f.vkey, "honest").grow(6)
	for name, cp := range map[string][]byte{
		"one of two":    f.log.checkpoint(t, f.w1),
		"impostor":      f.log.checkpoint(t, f.w1, impostor),
		"other log key": foreign.checkpoint(t, f.w1, f.w2),
		"no signatures": []byte("td.test/castellan/ledger\n6\nAAAA\n\n"),
		"garbage":       []byte("\x00\xff"),
	} {
		t.Run(name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			src := &source{log: f.log}
			src.cp, src.size = func() []byte { return cp }, func() uint64 { return 6 }
			st := openCache(t, t.TempDir())
			c := newChecker(t, policyOf(t, 2, f.w1, f.w2), f.vkey, src, st, reg)
			err := c.Prove(context.Background(), []logcheck.Cert{f.cert(2)})[0]
			if !errors.Is(err, logcheck.ErrNotWitnessed) || !strings.Contains(err.Error(), "checkpoint is refused") {
				t.Fatalf("err = %v, want the checkpoint refused", err)
			}
			if got, _ := st.LogCheckpoint(); got != nil || c.Accepted() != 0 {
				t.Fatalf("a forged checkpoint was accepted: %q", got)
			}
			if counter(t, reg, "castellan_agent_log_checkpoints_refused_total") == 0 {
				t.Fatal("refused checkpoint not counted")
			}
		})
	}
}

// Cosignatures are checked against the configured clock: a checkpoint
// cosigned now is refused by a checker whose clock reads an hour earlier
// (the cosignatures are from its future) and accepted at the same clock
// once it reaches the present.
func TestCosignatureDatedAfterTheClockRefused(t *testing.T) {
	f := newFixture(t, 3)
	clk := clocktest.NewClock(time.Now().Add(-time.Hour))
	reg := prometheus.NewRegistry()
	c, err := logcheck.New(logcheck.Config{Policy: policyOf(t, 2, f.w1, f.w2), LogKey: f.vkey, Source: f.src,
		Store: openCache(t, f.dir), Clock: clk, Wait: 500 * time.Millisecond, Poll: 10 * time.Millisecond, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Wait)
	err = c.Prove(context.Background(), []logcheck.Cert{f.cert(1)})[0]
	if !errors.Is(err, logcheck.ErrNotWitnessed) || !strings.Contains(err.Error(), "checkpoint is refused") {
		t.Fatalf("err = %v, want the future-dated checkpoint refused", err)
	}
	if counter(t, reg, "castellan_agent_log_checkpoints_refused_total") == 0 || c.Accepted() != 0 {
		t.Fatalf("future-dated checkpoint: refusal not counted or accepted size %d", c.Accepted())
	}
	clk.Set(time.Now())
	if err := c.Prove(context.Background(), []logcheck.Cert{f.cert(1)})[0]; err != nil {
		t.Fatalf("at the present: %v", err)
	}
}

// A stored checkpoint of another log (a changed --log-key) stops New with
// a message saying what changed.
func TestStoredCheckpointOfAnotherLog(t *testing.T) {
	f := newFixture(t, 3)
	st := openCache(t, t.TempDir())
	if err := st.PutLogCheckpoint(f.log.checkpoint(t, f.w1, f.w2)); err != nil {
		t.Fatal(err)
	}
	_, vkey2 := newLogKey(t)
	_, err := logcheck.New(logcheck.Config{Policy: policyOf(t, 2, f.w1, f.w2), LogKey: vkey2, Source: f.src, Store: st})
	if err == nil || !strings.Contains(err.Error(), "--log-key") {
		t.Fatalf("New = %v, want a refusal naming --log-key", err)
	}
}

// Monitor serves first and alarms later.
func TestMonitorAlarms(t *testing.T) {
	f := newFixture(t, 3)
	reg := prometheus.NewRegistry()
	c := f.checker(t, reg)
	c.Monitor(context.Background(), []logcheck.Cert{f.cert(1), {Index: idx(1), DER: []byte("unlogged")}},
		func(i int) []any { return []any{"i", i} })
	c.Wait()
	if got := counter(t, reg, "castellan_agent_log_unverified_total"); got != 1 {
		t.Fatalf("unverified counter %v, want 1 (the unlogged certificate only)", got)
	}
}
