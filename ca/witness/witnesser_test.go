package witness_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/ledger"
	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/witness"
	"github.com/castellan-dev/castellan/internal/clock/clocktest"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/mod/sumdb/note"
)

// published records what a Witnesser published.
type published struct{ ch chan []byte }

func (p *published) store(_ context.Context, cosigned []byte) error {
	// Keep only the newest: drop an unread older one (rounds never
	// overlap, so this is the only sender and the send cannot block).
	select {
	case <-p.ch:
	default:
	}
	p.ch <- cosigned
	return nil
}

// TestWitnesserKeepsTheLedgerWitnessed: a Witnesser over the real ledger
// and a real omniwitness publishes a cosigned checkpoint as the ledger
// grows, submits nothing while it does not (unless the witnessing is
// older than Refresh), follows appends when run as a loop, and after a
// restart continues from the checkpoint it had published.
func TestWitnesserKeepsTheLedgerWitnessed(t *testing.T) {
	ctx := testContext(t)
	l := openLedger(t, ctx, filepath.Join(t.TempDir(), "ledger.db"), "w", 3)
	defer l.Close()
	logV, err := note.NewVerifier(l.VerifierKey())
	if err != nil {
		t.Fatal(err)
	}
	ow := startOmniwitness(t, "witness.test/w1", l.VerifierKey())
	p := policy(t, 1, ow.spec("w1"))
	reg := prometheus.NewRegistry()
	clk := clocktest.NewClock(time.Now())
	pub := &published{ch: make(chan []byte, 1)}
	wr := witness.NewWitnesser(witness.New(p, witness.ClientConfig{Registry: reg}), l, witness.WitnesserConfig{
		OnWitnessed: pub.store, Interval: 10 * time.Millisecond, Refresh: time.Hour, Clock: clk, Registry: reg})

	first, err := wr.Witness(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := p.Verify(first, l.Origin(), logV, time.Now()); err != nil || v.Checkpoint.Size != 3 {
		t.Fatalf("first round: %v %+v", err, v)
	}
	submissions := func() float64 { return metricValue(t, reg, "castellan_witness_submissions_total", "cosigned", "w1") }
	if again, err := wr.Witness(ctx); err != nil || string(again) != string(first) || submissions() != 1 {
		t.Fatalf("a round without growth: %v, %v submissions; want the same checkpoint, 1 submission", err, submissions())
	}
	clk.Advance(2 * time.Hour)
	if _, err := wr.Witness(ctx); err != nil || submissions() != 2 {
		t.Fatalf("a round after Refresh: %v, %v submissions; want 2", err, submissions())
	}

	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- wr.Run(runCtx) }()
	appendEvents(t, ctx, l, 5)
	waitWitnessed(t, pub, p, l.Origin(), logV, 8)
	stop()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run returned %v; want context.Canceled", err)
	}
	if got := metricValue(t, reg, "castellan_witness_witnessed_size"); got != 8 {
		t.Fatalf("castellan_witness_witnessed_size = %v, want 8", got)
	}

	// A restarted CA: a new client (no witness state) and a Witnesser
	// started from the published checkpoint.
	restarted := witness.NewWitnesser(witness.New(p, witness.ClientConfig{}), l, witness.WitnesserConfig{Latest: wr.Latest()})
	appendEvents(t, ctx, l, 2)
	got, err := restarted.Witness(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := p.Verify(got, l.Origin(), logV, time.Now()); err != nil || v.Checkpoint.Size != 10 {
		t.Fatalf("after restart: %v %+v", err, v)
	}
}

func appendEvents(t *testing.T, ctx context.Context, l *ledger.Ledger, n int) {
	t.Helper()
	for i := range n {
		if _, err := l.Append(ctx, entry.Event{Kind: entry.KindJoinTokenUse, Node: fmt.Sprintf("more-%d-%d", l.Size(), i)}); err != nil {
			t.Fatal(err)
		}
	}
}

// waitWitnessed waits (at most 30s) for a published checkpoint of size
// that satisfies p.
func waitWitnessed(t *testing.T, pub *published, p *witness.Policy, origin string, logV note.Verifier, size uint64) {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case cp := <-pub.ch:
			v, err := p.Verify(cp, origin, logV, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if v.Checkpoint.Size == size {
				return
			}
		case <-timeout:
			t.Fatalf("no witnessed checkpoint of size %d published within 30s", size)
		}
	}
}
