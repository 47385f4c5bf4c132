package ledger

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/index"
	"github.com/castellan-dev/castellan/ca/ledger/logfile"
	"github.com/castellan-dev/castellan/ca/verifier"
)

func TestListPagesThroughSPIFFEIDIndex(t *testing.T) {
	forBackends(t, func(t *testing.T, be backend) {
		clock := newFakeClock()
		l := be.openTest(t, clock)
		fill(t, l, 2000, clock.Now().Add(time.Hour))
		ctx := context.Background()
		id := "spiffe://cluster.local/ns/ns3/sa/sa3" // j%7==3 && j%13==3: j ≡ 3 mod 91
		var got []entry.Entry
		token := ""
		for pages := 0; pages < 100; pages++ {
			page, next, err := l.List(ctx, index.Filter{SPIFFEID: id}, 7, token)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, page...)
			if token = next; token == "" {
				break
			}
		}
		want := 0
		for j := 0; j < 2000; j++ {
			if j%91 == 3 {
				want++
			}
		}
		if len(got) != want {
			t.Fatalf("got %d entries, want %d", len(got), want)
		}
		for i, e := range got {
			if e.SPIFFEID != id || (i > 0 && e.Index <= got[i-1].Index) {
				t.Fatalf("entry %d: %s index %d", i, e.SPIFFEID, e.Index)
			}
		}
	})
}

func TestListFiltersByPrefixNodeStateAndTime(t *testing.T) {
	forBackends(t, func(t *testing.T, be backend) {
		clock := newFakeClock()
		l := be.openTest(t, clock)
		ctx := context.Background()
		start := clock.Now()
		fill(t, l, 100, start.Add(time.Hour))
		clock.Advance(time.Minute)
		fillFrom(t, l, 100, 10, start.Add(2*time.Minute))
		first, _ := l.Entry(ctx, 0)
		if _, err := l.Revoke(ctx, first.Serial, "superseded"); err != nil {
			t.Fatal(err)
		}
		count := func(f index.Filter) int {
			t.Helper()
			n, token := 0, ""
			for pages := 0; pages < 1000; pages++ {
				page, next, err := l.List(ctx, f, 50, token)
				if err != nil {
					t.Fatal(err)
				}
				n += len(page)
				if token = next; token == "" {
					return n
				}
			}
			t.Fatal("paging did not end")
			return 0
		}
		if n := count(index.Filter{SPIFFEIDPrefix: "spiffe://cluster.local/ns/ns2/", Kinds: []entry.Kind{entry.KindIssuance}}); n != 14+2 {
			t.Errorf("prefix ns2: %d", n)
		}
		if n := count(index.Filter{Namespace: "ns2", Kinds: []entry.Kind{entry.KindIssuance}}); n != 16 {
			t.Errorf("namespace ns2: %d", n)
		}
		if n := count(index.Filter{Node: "node-1", Kinds: []entry.Kind{entry.KindIssuance}}); n != 20+2 {
			t.Errorf("node-1: %d", n)
		}
		if n := count(index.Filter{Since: start.Add(time.Second)}); n != 11 {
			t.Errorf("since: %d (10 issuances + 1 revocation)", n)
		}
		if n := count(index.Filter{State: index.StateRevoked}); n != 1 {
			t.Errorf("revoked: %d", n)
		}
		clock.Advance(5 * time.Minute) // the last 10 expire
		if n := count(index.Filter{State: index.StateExpired}); n != 10 {
			t.Errorf("expired: %d", n)
		}
		if n := count(index.Filter{State: index.StateActive}); n != 99 {
			t.Errorf("active: %d", n)
		}
	})
}

func TestListRefusesUnboundedOrForeignPaging(t *testing.T) {
	forBackends(t, func(t *testing.T, be backend) {
		l := be.openTest(t, newFakeClock())
		ctx := context.Background()
		for _, size := range []int{0, -1, index.MaxPageSize + 1} {
			if _, _, err := l.List(ctx, index.Filter{}, size, ""); !errors.Is(err, entry.ErrInvalidArgument) {
				t.Errorf("page size %d: %v", size, err)
			}
		}
		fill(t, l, 20, time.Now().Add(time.Hour))
		_, token, err := l.List(ctx, index.Filter{Node: "node-1"}, 1, "")
		if err != nil || token == "" {
			t.Fatal(token, err)
		}
		if _, _, err := l.List(ctx, index.Filter{Node: "node-2"}, 1, token); !errors.Is(err, entry.ErrInvalidArgument) {
			t.Fatalf("token reused on another query: %v", err)
		}
		if _, _, err := l.List(ctx, index.Filter{}, 1, "!!"); !errors.Is(err, entry.ErrInvalidArgument) {
			t.Fatalf("garbage token: %v", err)
		}
	})
}

func TestListStopsAtScanBudget(t *testing.T) {
	forBackends(t, func(t *testing.T, be backend) {
		clock := newFakeClock()
		l := be.openTest(t, clock)
		fill(t, l, index.MaxScan+100, clock.Now().Add(time.Hour))
		// Nothing matches the node filter applied after the prefix index.
		page, next, err := l.List(context.Background(), index.Filter{SPIFFEIDPrefix: "spiffe://", Node: "nope"}, 10, "")
		if err != nil {
			t.Fatal(err)
		}
		if len(page) != 0 || next == "" {
			t.Fatalf("page %d, next %q: want an empty page with a continuation", len(page), next)
		}
	})
}

func TestWatchDeliversExistingAndNewEntries(t *testing.T) {
	forBackends(t, func(t *testing.T, be backend) {
		clock := newFakeClock()
		l := be.openTest(t, clock)
		fill(t, l, 5, clock.Now().Add(time.Hour))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		got := make(chan uint64, 100)
		done := make(chan error, 1)
		go func() {
			done <- l.Watch(ctx, 3, func(e entry.Entry) error {
				got <- e.Index
				if e.Index == 7 {
					return errStop
				}
				return nil
			})
		}()
		for _, want := range []uint64{3, 4} {
			if i := <-got; i != want {
				t.Fatalf("got %d, want %d", i, want)
			}
		}
		fillFrom(t, l, 5, 3, clock.Now().Add(time.Hour))
		if err := <-done; !errors.Is(err, errStop) {
			t.Fatalf("Watch returned %v", err)
		}
		for _, want := range []uint64{5, 6, 7} {
			if i := <-got; i != want {
				t.Fatalf("got %d, want %d", i, want)
			}
		}
	})
}

var errStop = errors.New("stop")

func TestPruneKeepsProofsAndDropsContent(t *testing.T) {
	clock := newFakeClock()
	l, path := openTest(t, clock)
	ctx := context.Background()
	fill(t, l, 30, clock.Now().Add(time.Hour))
	fillFrom(t, l, 30, 10, clock.Now().Add(60*24*time.Hour))
	e0, _ := l.Entry(ctx, 0)
	if _, err := l.Revoke(ctx, e0.Serial, "keyCompromise"); err != nil {
		t.Fatal(err)
	}
	cp, _ := l.Checkpoint(ctx)
	clock.Advance(31 * 24 * time.Hour)
	n, err := l.Prune(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n != 31 {
		t.Fatalf("pruned %d, want 31 (30 issuances + 1 revocation)", n)
	}
	e, err := l.Entry(ctx, 4)
	if err != nil || !e.Pruned || e.Data != nil || len(e.LeafHash) != 32 {
		t.Fatalf("pruned entry = %+v, %v", e, err)
	}
	if _, err := l.Get(ctx, e0.Serial); !errors.Is(err, entry.ErrNotFound) {
		t.Fatalf("Get of pruned serial: %v", err)
	}
	if page, _, _ := l.List(ctx, index.Filter{}, 100, ""); len(page) != 10 {
		t.Fatalf("List after prune: %d entries", len(page))
	}
	c, _ := verifier.OpenCheckpoint(cp, "", l.VerifierKey())
	if _, err := l.InclusionProof(4, c.Size); err != nil {
		t.Fatal(err)
	}
	l.Close()
	rep, err := logfile.VerifyFile(path, l.VerifierKey())
	if err != nil || !rep.OK() || rep.Pruned != 31 {
		t.Fatalf("verify after prune: %+v %v", rep, err)
	}
}

func TestAuditLineIsJSONPerEvent(t *testing.T) {
	var buf bytes.Buffer
	l, err := Open(filepath.Join(t.TempDir(), "l.db"), Config{Logger: slog.New(slog.NewJSONHandler(&buf, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ev := certEvent(9, "spiffe://td/ns/a/sa/b", "n7", time.Now().Add(time.Hour))
	if _, err := l.Append(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Revoke(context.Background(), ev.Serial, "key compromise"); err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n"))
	if len(lines) != 2 {
		t.Fatalf("%d audit lines: %s", len(lines), buf.Bytes())
	}
	var rec map[string]any
	if err := json.Unmarshal(lines[1], &rec); err != nil {
		t.Fatal(err)
	}
	if rec["kind"] != "revocation" || rec["serial"] != ev.Serial || rec["reason"] != "key compromise" || rec["index"] != 1.0 {
		t.Fatalf("audit line = %v", rec)
	}
}

// TestWatchEndsWhenLedgerCloses closes the ledger under a Watch that has
// delivered the whole log: it is past its check for a closed ledger and can
// only learn of Close by being woken, so it would hang if Close did not
// wake it.
func TestWatchEndsWhenLedgerCloses(t *testing.T) {
	l, err := Open(filepath.Join(t.TempDir(), "l.db"), Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(context.Background(), entry.Event{Kind: entry.KindJoinTokenUse, Node: "node-1"}); err != nil {
		t.Fatal(err)
	}
	delivered := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- l.Watch(context.Background(), 0, func(e entry.Entry) error {
			if e.Index == 0 {
				close(delivered)
			}
			return nil
		})
	}()
	select {
	case <-delivered:
	case err := <-done:
		t.Fatalf("Watch returned %v before delivering the log", err)
	case <-time.After(5 * time.Second):
		t.Fatal("Watch did not deliver entry 0")
	}
	l.Close()
	select {
	case err := <-done:
		if !errors.Is(err, entry.ErrClosed) {
			t.Fatalf("Watch returned %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Watch still running after Close")
	}
}
