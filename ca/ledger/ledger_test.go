package ledger

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/revocation"
	"github.com/castellan-dev/castellan/ca/verifier"
	"github.com/castellan-dev/castellan/internal/clock/clocktest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
)

func TestAppendAssignsConsecutiveIndicesAndSurvivesReopen(t *testing.T) {
	clock := newFakeClock()
	path := filepath.Join(t.TempDir(), "ledger.db")
	l, err := Open(path, Config{Clock: clocktest.Func(clock.Now)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	exp := clock.Now().Add(time.Hour)
	idx, err := l.Append(ctx, certEvent(1, "spiffe://td/ns/a/sa/b", "n1", exp), certEvent(2, "spiffe://td/ns/a/sa/c", "n1", exp))
	if err != nil {
		t.Fatal(err)
	}
	if len(idx) != 2 || idx[0] != 0 || idx[1] != 1 {
		t.Fatalf("indices = %v, want [0 1]", idx)
	}
	cp1, err := l.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	vkey := l.VerifierKey()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l, err = Open(path, Config{Clock: clocktest.Func(clock.Now)})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if l.VerifierKey() != vkey {
		t.Fatal("log key changed across reopen")
	}
	if string(l.StoredCheckpoint()) != string(cp1) {
		t.Fatal("stored checkpoint lost across reopen")
	}
	idx, err = l.Append(ctx, certEvent(3, "spiffe://td/ns/a/sa/d", "n2", exp))
	if err != nil || idx[0] != 2 {
		t.Fatalf("append after reopen: %v %v", idx, err)
	}
	e, err := l.Get(ctx, certEvent(2, "", "", exp).Serial)
	if err != nil {
		t.Fatal(err)
	}
	if e.Index != 1 || e.SPIFFEID != "spiffe://td/ns/a/sa/c" || string(e.CertDER) != "cert-2" || !e.Time.Equal(clock.Now()) {
		t.Fatalf("Get = %+v", e)
	}
}

func TestAppendRejectsInvalidEvents(t *testing.T) {
	forBackends(t, func(t *testing.T, be backend) {
		l := be.openTest(t, newFakeClock())
		for name, ev := range map[string]entry.Event{
			"unknown kind":     {Kind: "bogus"},
			"no serial":        {Kind: entry.KindIssuance, SPIFFEID: "spiffe://td/x"},
			"upper-case hex":   {Kind: entry.KindIssuance, Serial: "AB", SPIFFEID: "spiffe://td/x"},
			"no SPIFFE ID":     {Kind: entry.KindRenewal, Serial: "ab"},
			"revoke no serial": {Kind: entry.KindRevocation},
		} {
			if _, err := l.Append(context.Background(), ev); !errors.Is(err, entry.ErrInvalidEvent) {
				t.Errorf("%s: err = %v, want ErrInvalidEvent", name, err)
			}
		}
		if l.Size() != 0 {
			t.Fatalf("size = %d after rejected appends", l.Size())
		}
	})
}

func TestConcurrentAppendsAreGroupedAndComplete(t *testing.T) {
	forBackends(t, func(t *testing.T, be backend) {
		l := be.openTest(t, newFakeClock())
		exp := time.Now().Add(time.Hour)
		const workers, per = 8, 50
		var wg sync.WaitGroup
		seen := make(chan uint64, workers*per)
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				for i := 0; i < per; i++ {
					idx, err := l.Append(context.Background(), certEvent(w*per+i, "spiffe://td/x", "n", exp))
					if err != nil {
						t.Error(err)
						return
					}
					seen <- idx[0]
				}
			}(w)
		}
		wg.Wait()
		close(seen)
		got := map[uint64]bool{}
		for i := range seen {
			if got[i] {
				t.Fatalf("index %d returned twice", i)
			}
			got[i] = true
		}
		if len(got) != workers*per || l.Size() != workers*per {
			t.Fatalf("got %d distinct indices, size %d, want %d", len(got), l.Size(), workers*per)
		}
	})
}

func TestInclusionProofVerifiesAgainstSignedCheckpoint(t *testing.T) {
	forBackends(t, func(t *testing.T, be backend) {
		clock := newFakeClock()
		l := be.openTest(t, clock)
		fill(t, l, 1337, clock.Now().Add(time.Hour))
		ctx := context.Background()
		signed, err := l.Checkpoint(ctx)
		if err != nil {
			t.Fatal(err)
		}
		cp, err := verifier.OpenCheckpoint(signed, l.Origin(), l.VerifierKey())
		if err != nil {
			t.Fatal(err)
		}
		if cp.Size != 1337 {
			t.Fatalf("checkpoint size %d", cp.Size)
		}
		for _, i := range []uint64{0, 1, 511, 1024, 1336} {
			e, err := l.Entry(ctx, i)
			if err != nil {
				t.Fatal(err)
			}
			p, err := l.InclusionProof(i, cp.Size)
			if err != nil {
				t.Fatal(err)
			}
			if err := proof.VerifyInclusion(rfc6962.DefaultHasher, i, cp.Size, rfc6962.DefaultHasher.HashLeaf(e.Data), p, cp.Hash); err != nil {
				t.Fatalf("entry %d: %v", i, err)
			}
			wrong := rfc6962.DefaultHasher.HashLeaf(append(e.Data, ' '))
			if proof.VerifyInclusion(rfc6962.DefaultHasher, i, cp.Size, wrong, p, cp.Hash) == nil {
				t.Fatalf("entry %d: altered data verified", i)
			}
		}
		if _, err := l.InclusionProof(1337, 1337); !errors.Is(err, entry.ErrInvalidArgument) {
			t.Fatalf("proof past the end: %v", err)
		}
	})
}

func TestConsistencyProofBetweenCheckpoints(t *testing.T) {
	forBackends(t, func(t *testing.T, be backend) {
		clock := newFakeClock()
		l := be.openTest(t, clock)
		ctx := context.Background()
		fill(t, l, 300, clock.Now().Add(time.Hour))
		old, _ := l.Checkpoint(ctx)
		fill(t, l, 701, clock.Now().Add(time.Hour))
		cur, _ := l.Checkpoint(ctx)
		c1, err := verifier.OpenCheckpoint(old, "", l.VerifierKey())
		if err != nil {
			t.Fatal(err)
		}
		c2, err := verifier.OpenCheckpoint(cur, "", l.VerifierKey())
		if err != nil {
			t.Fatal(err)
		}
		p, err := l.ConsistencyProof(c1.Size, c2.Size)
		if err != nil {
			t.Fatal(err)
		}
		if err := proof.VerifyConsistency(rfc6962.DefaultHasher, c1.Size, c2.Size, p, c1.Hash, c2.Hash); err != nil {
			t.Fatal(err)
		}
	})
}

func TestCheckpointWithBadSignatureIsRejected(t *testing.T) {
	forBackends(t, func(t *testing.T, be backend) {
		l := be.openTest(t, newFakeClock())
		signed, _ := l.Checkpoint(context.Background())
		bad := append([]byte(nil), signed...)
		bad[len(bad)-5] ^= 1
		if _, err := verifier.OpenCheckpoint(bad, "", l.VerifierKey()); err == nil {
			t.Fatal("checkpoint with a flipped signature byte verified")
		}
		other := be.openTest(t, newFakeClock())
		if _, err := verifier.OpenCheckpoint(signed, "", other.VerifierKey()); err == nil {
			t.Fatal("checkpoint verified under another log's key")
		}
	})
}

func TestRevokeRecordsAndNotifies(t *testing.T) {
	forBackends(t, func(t *testing.T, be backend) {
		clock := newFakeClock()
		l := be.openTest(t, clock)
		ctx := context.Background()
		exp := clock.Now().Add(time.Hour)
		ev := certEvent(42, "spiffe://td/ns/a/sa/b", "n1", exp)
		if _, err := l.Append(ctx, ev); err != nil {
			t.Fatal(err)
		}
		changed := l.RevocationsChanged()
		if _, err := l.Revoke(ctx, "0xDEAD", "x"); !errors.Is(err, entry.ErrNotFound) {
			t.Fatalf("revoke unknown: %v", err)
		}
		select {
		case <-changed:
			t.Fatal("failed revoke signalled a change")
		default:
		}
		r, err := l.Revoke(ctx, ev.Serial, "key compromise")
		if err != nil {
			t.Fatal(err)
		}
		if r.Kind != entry.KindRevocation || r.Index != 1 || r.SPIFFEID != ev.SPIFFEID || r.Reason != "key compromise" {
			t.Fatalf("revocation entry = %+v", r)
		}
		select {
		case <-changed:
		case <-time.After(5 * time.Second):
			t.Fatal("RevocationsChanged did not fire")
		}
		if got := l.RevokedSerials(clock.Now()); len(got) != 1 || got[0] != ev.Serial {
			t.Fatalf("RevokedSerials = %v", got)
		}
		if got := l.RevokedSerials(exp.Add(time.Second)); len(got) != 0 {
			t.Fatalf("expired revocation still listed: %v", got)
		}
		if _, err := l.Revoke(ctx, ev.Serial, "again"); !errors.Is(err, revocation.ErrAlreadyRevoked) {
			t.Fatalf("second revoke: %v", err)
		}
		e, err := l.Get(ctx, ev.Serial)
		if err != nil || e.Revoked == nil || e.Revoked.Index != 1 {
			t.Fatalf("Get after revoke: %+v %v", e, err)
		}
	})
}

func TestOpenRefusesExistingLedgerWithoutItsKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	l, err := Open(path, Config{})
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	if err := os.Remove(path + ".key"); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path, Config{}); err == nil || !strings.Contains(err.Error(), "log key") {
		t.Fatalf("Open without the log key: %v", err)
	}
}

func TestMetricsCountEventsAndSize(t *testing.T) {
	reg := prometheus.NewRegistry()
	l, err := Open(filepath.Join(t.TempDir(), "l.db"), Config{Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	fill(t, l, 5, time.Now().Add(time.Hour))
	// One append of runs of kinds: each run is counted under its kind.
	join := entry.Event{Kind: entry.KindJoinTokenUse, Node: "n"}
	notAfter := time.Now().Add(time.Hour)
	mixed := []entry.Event{join, certEvent(90, "spiffe://td/a", "n", notAfter), certEvent(91, "spiffe://td/a", "n", notAfter), join, certEvent(92, "spiffe://td/b", "n", notAfter)}
	if _, err := l.Append(context.Background(), mixed...); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP castellan_ledger_size Number of entries in the issuance ledger's Merkle tree.
# TYPE castellan_ledger_size gauge
castellan_ledger_size 10
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "castellan_ledger_size"); err != nil {
		t.Fatal(err)
	}
	mfs, _ := reg.Gather()
	counts := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() == "castellan_ledger_events_total" {
			for _, m := range mf.GetMetric() {
				counts[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
			}
		}
	}
	if counts["issuance"] != 8 || counts["join_token_use"] != 2 || len(counts) != 2 {
		t.Fatalf("events by kind = %v, want 8 issuance and 2 join_token_use", counts)
	}
}

func TestMetricsTimeAppendsAndCountFailures(t *testing.T) {
	reg := prometheus.NewRegistry()
	l, err := Open(filepath.Join(t.TempDir(), "l.db"), Config{Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := l.Append(context.Background(), entry.Event{Kind: entry.KindJoinTokenUse, Node: "n"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(context.Background(), entry.Event{Kind: entry.KindJoinTokenUse, Node: "n"}); err == nil {
		t.Fatal("append to a closed ledger succeeded")
	}
	if got := testutil.ToFloat64(l.metrics.failures); got != 1 {
		t.Errorf("castellan_ledger_append_failures_total = %v, want 1", got)
	}
	want := `
# HELP castellan_ledger_append_failures_total Append calls whose transaction failed; the certificates they recorded were withheld.
# TYPE castellan_ledger_append_failures_total counter
castellan_ledger_append_failures_total 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "castellan_ledger_append_failures_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(l.metrics.duration); n != 1 {
		t.Fatalf("%d append duration series, want 1", n)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "castellan_ledger_append_duration_seconds" {
			if c := mf.GetMetric()[0].GetHistogram().GetSampleCount(); c != 3 {
				t.Errorf("append duration observed %d times, want 3 (the successful appends only)", c)
			}
			return
		}
	}
	t.Error("castellan_ledger_append_duration_seconds not exported")
}
