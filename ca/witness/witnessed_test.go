package witness_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/witness"
	"github.com/prometheus/client_golang/prometheus"
)

// TestOmniwitnessCosignsFirstAndGrownCheckpoints: a real omniwitness
// cosigns a log's first checkpoint (trust on first use), then a grown
// one with the consistency proof from the size it cosigned; a client
// that lost its state (a restarted CA) learns the witness's size from
// its 409 and gets the next checkpoint cosigned too. Every returned
// checkpoint is a signed note that satisfies the policy.
func TestOmniwitnessCosignsFirstAndGrownCheckpoints(t *testing.T) {
	ctx := testContext(t)
	key := newLogKey(t, testOrigin)
	lg := newTestLog(t, key, "genuine").grow(5)
	w := startOmniwitness(t, "witness.test/w1", key.vkey)
	p := policy(t, 1, w.spec("w1"))
	reg := prometheus.NewRegistry()
	c := witness.New(p, witness.ClientConfig{Registry: reg})

	for i, grow := range []int{0, 7, 300} {
		lg.grow(grow)
		cp := lg.checkpoint(t)
		got, err := c.Submit(ctx, cp, 0, lg.proof)
		if err != nil {
			t.Fatalf("submission %d (size %d): %v", i, lg.tree.Size(), err)
		}
		v, err := p.Verify(got, testOrigin, lg.verifier, time.Now())
		if err != nil {
			t.Fatalf("submission %d: cosigned checkpoint does not verify: %v\n%s", i, err, got)
		}
		if v.Checkpoint.Size != lg.tree.Size() || len(v.Cosignatures) != 1 || v.Cosignatures[0].Witness != "w1" {
			t.Fatalf("submission %d: verified %+v, want size %d cosigned by w1", i, v, lg.tree.Size())
		}
		if age := time.Since(v.Cosignatures[0].Time); age < -time.Minute || age > time.Minute {
			t.Fatalf("cosignature timestamp %s is not now", v.Cosignatures[0].Time)
		}
		if !strings.HasPrefix(string(got), string(cp)) {
			t.Fatalf("the cosigned checkpoint does not start with the log's signed checkpoint:\n%s", got)
		}
	}
	if n := metricValue(t, reg, "castellan_witness_submissions_total", "cosigned", "w1"); n != 3 {
		t.Fatalf("castellan_witness_submissions_total{w1,cosigned} = %v, want 3", n)
	}

	// A CA restarted without state: the witness answers 409 with its size
	// (312), and the client retries once with the proof from there.
	restarted := witness.New(p, witness.ClientConfig{})
	lg.grow(20)
	got, err := restarted.Submit(ctx, lg.checkpoint(t), 0, lg.proof)
	if err != nil {
		t.Fatalf("submission by a client without state: %v", err)
	}
	if _, err := p.Verify(got, testOrigin, lg.verifier, time.Now()); err != nil {
		t.Fatal(err)
	}

	// A witness added to the policy later has cosigned nothing: told the
	// published size (332), it answers 409 with 0 and cosigns from there.
	w2 := startOmniwitness(t, "witness.test/w2", key.vkey)
	p2 := policy(t, 2, w.spec("w1"), w2.spec("w2"))
	lg.grow(1)
	got, err = witness.New(p2, witness.ClientConfig{}).Submit(ctx, lg.checkpoint(t), 332, lg.proof)
	if err != nil {
		t.Fatalf("submission with a new witness: %v", err)
	}
	if v, err := p2.Verify(got, testOrigin, lg.verifier, time.Now()); err != nil || len(v.Cosignatures) != 2 {
		t.Fatalf("2 of 2 with a new witness: %v %+v", err, v)
	}
}

// TestOmniwitnessRefusesForkedLog: once a witness cosigned a log, a second
// tree with the same origin and key but other entries (a CA showing a
// different log, or one whose storage was rewritten between two runs)
// gets no cosignature: not at the same size, not larger, not smaller, and
// not after the witness restarts on its persisted state. The genuine log
// keeps being cosigned. The error says the witness found it inconsistent.
func TestOmniwitnessRefusesForkedLog(t *testing.T) {
	ctx := testContext(t)
	key := newLogKey(t, testOrigin)
	genuine := newTestLog(t, key, "genuine").grow(8)
	w := startOmniwitness(t, "witness.test/w1", key.vkey)
	p := policy(t, 1, w.spec("w1"))
	if _, err := witness.New(p, witness.ClientConfig{}).Submit(ctx, genuine.checkpoint(t), 0, genuine.proof); err != nil {
		t.Fatalf("genuine log: %v", err)
	}

	for _, tc := range []struct {
		name string
		size int
		want error
		msg  string
	}{
		{"same size, other root", 8, witness.ErrInconsistent, "may have forked"},
		{"larger", 20, witness.ErrInconsistent, "may have forked"},
		{"smaller (rolled back)", 6, witness.ErrStale, "cosigned size 8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fork := newTestLog(t, key, "forged").grow(tc.size)
			// A fresh client: the forger's CA holds no witness state,
			// and claims the witness last cosigned its own size.
			got, err := witness.New(p, witness.ClientConfig{}).Submit(ctx, fork.checkpoint(t), 0, fork.proof)
			if got != nil {
				t.Fatalf("the fork was cosigned:\n%s", got)
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("error %v; want %v", err, tc.want)
			}
			var qe *witness.QuorumError
			if !errors.As(err, &qe) || len(qe.Refusals) != 1 || qe.Refusals[0].Witness != "w1" {
				t.Fatalf("error %#v is not a QuorumError naming w1", err)
			}
			mustContain(t, err, "w1", tc.msg, "got 0 of the 1 cosignatures")
		})
	}

	// The witness's state survives a restart: the fork is still refused,
	// the genuine log still cosigned from where it was.
	w.restart()
	p = policy(t, 1, w.spec("w1"))
	fork := newTestLog(t, key, "forged").grow(30)
	_, err := witness.New(p, witness.ClientConfig{}).Submit(ctx, fork.checkpoint(t), 0, fork.proof)
	if !errors.Is(err, witness.ErrInconsistent) {
		t.Fatalf("fork after restart: %v; want ErrInconsistent", err)
	}
	genuine.grow(4)
	if _, err := witness.New(p, witness.ClientConfig{}).Submit(ctx, genuine.checkpoint(t), 0, genuine.proof); err != nil {
		t.Fatalf("genuine log after restart: %v", err)
	}
}

// TestOmniwitnessQuorum: with two witnesses and one of them down, a
// policy of 2 of 2 fails and names the witness that did not answer; 1 of
// 2 succeeds with the one cosignature, which a 2-of-2 Verify refuses.
func TestOmniwitnessQuorum(t *testing.T) {
	ctx := testContext(t)
	key := newLogKey(t, testOrigin)
	lg := newTestLog(t, key, "genuine").grow(3)
	w1 := startOmniwitness(t, "witness.test/w1", key.vkey)
	w2 := startOmniwitness(t, "witness.test/w2", key.vkey)
	both := policy(t, 2, w1.spec("w1"), w2.spec("w2"))
	got, err := witness.New(both, witness.ClientConfig{}).Submit(ctx, lg.checkpoint(t), 0, lg.proof)
	if err != nil {
		t.Fatalf("2 of 2, both up: %v", err)
	}
	v, err := both.Verify(got, testOrigin, lg.verifier, time.Now())
	if err != nil || len(v.Cosignatures) != 2 {
		t.Fatalf("2 of 2 verify: %v %+v\n%s", err, v, got)
	}

	w2.stop()
	lg.grow(5)
	_, err = witness.New(both, witness.ClientConfig{Timeout: 5 * time.Second}).Submit(ctx, lg.checkpoint(t), 3, lg.proof)
	if !errors.Is(err, witness.ErrUnavailable) {
		t.Fatalf("2 of 2 with w2 down: %v; want ErrUnavailable", err)
	}
	mustContain(t, err, "got 1 of the 2 cosignatures", "w2: the witness is unavailable")
	if strings.Contains(err.Error(), "w1:") {
		t.Fatalf("error blames w1, which cosigned: %v", err)
	}

	one := policy(t, 1, w1.spec("w1"), w2.spec("w2"))
	got, err = witness.New(one, witness.ClientConfig{}).Submit(ctx, lg.checkpoint(t), 3, lg.proof)
	if err != nil {
		t.Fatalf("1 of 2 with w2 down: %v", err)
	}
	v, err = one.Verify(got, testOrigin, lg.verifier, time.Now())
	if err != nil || len(v.Cosignatures) != 1 || v.Cosignatures[0].Witness != "w1" {
		t.Fatalf("1 of 2 verify: %v %+v", err, v)
	}
	_, err = both.Verify(got, testOrigin, lg.verifier, time.Now())
	mustContain(t, err, "has 1 of the 2 witness cosignatures", "missing: w2")
}

// TestOmniwitnessRefusesUnknownLogAndKey: a checkpoint of an origin the
// witness does not follow, and one of the right origin signed by another
// key, get no cosignature, and the error says what to check. (This
// omniwitness answers both with 500 rather than tlog-witness's 404 and
// 403: its SQLite log lookup fails with "no rows" and its signature check
// is not mapped; the 404 and 403 mappings are tested with fake witnesses.)
func TestOmniwitnessRefusesUnknownLogAndKey(t *testing.T) {
	ctx := testContext(t)
	key := newLogKey(t, testOrigin)
	w := startOmniwitness(t, "witness.test/w1", key.vkey)
	p := policy(t, 1, w.spec("w1"))
	genuine := newTestLog(t, key, "genuine").grow(2)

	other := newTestLog(t, newLogKey(t, "castellan.test/other"), "x").grow(2)
	impostor := newTestLog(t, newLogKey(t, testOrigin), "x").grow(2)
	for _, tc := range []struct {
		name string
		lg   *testLog
	}{{"unknown origin", other}, {"wrong log key", impostor}} {
		got, err := witness.New(p, witness.ClientConfig{}).Submit(ctx, tc.lg.checkpoint(t), 0, tc.lg.proof)
		if got != nil || !errors.Is(err, witness.ErrUnavailable) {
			t.Fatalf("%s: %v; want ErrUnavailable (omniwitness answers 500)", tc.name, err)
		}
		mustContain(t, err, "500", "configured for origin \""+tc.lg.signer.Name()+"\" with the log's verifier key")
	}
	// The impostor's attempt did not disturb the witness's view of the
	// genuine log.
	if _, err := witness.New(p, witness.ClientConfig{}).Submit(ctx, genuine.checkpoint(t), 0, genuine.proof); err != nil {
		t.Fatalf("genuine log: %v", err)
	}
}
