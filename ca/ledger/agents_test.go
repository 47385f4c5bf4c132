package ledger

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/ledger/agents"
	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/index"
	"github.com/castellan-dev/castellan/ca/ledger/revocation"
	"github.com/castellan-dev/castellan/internal/clock/clocktest"
	bolt "go.etcd.io/bbolt"
)

const agentA = "spiffe://cluster.local/castellan/agent/node-a"

// TestAgentRecordFollowsTheLog: the agent record of a node follows its
// agent SVIDs, and a ban and unban in the same index batch end unbanned
// (log order wins over key order).
func TestAgentRecordFollowsTheLog(t *testing.T) {
	clock := newFakeClock()
	l, path := openTest(t, clock)
	ctx := context.Background()
	exp := clock.Now().Add(time.Hour)
	first := certEvent(1, agentA, "node-a", exp)
	first.Time = clock.Now()
	second := certEvent(2, agentA, "node-a", exp)
	second.Time, second.Parent = clock.Now().Add(time.Minute), first.Serial
	work := certEvent(3, "spiffe://cluster.local/ns/it/sa/app", "node-a", exp)
	if _, err := l.Append(ctx, first, second, work,
		entry.Event{Kind: entry.KindBan, Node: "node-a", Reason: "x"}, entry.Event{Kind: entry.KindUnban, Node: "node-a", Reason: "y"}); err != nil {
		t.Fatal(err)
	}
	a, err := l.Agent(ctx, "node-a")
	if err != nil {
		t.Fatal(err)
	}
	if a.Serial != second.Serial || !a.FirstSeen.Equal(first.Time) || !a.LastSeen.Equal(second.Time) || a.Ban != nil {
		t.Fatalf("agent record %+v; want serial %s, first seen %v, last seen %v, not banned", a, second.Serial, first.Time, second.Time)
	}
	if _, ok := l.Banned("node-a"); ok {
		t.Fatal("banned after ban+unban")
	}
	if _, err := l.Agent(ctx, "node-z"); !errors.Is(err, entry.ErrNotFound) {
		t.Fatalf("unknown node: %v, want ErrNotFound", err)
	}
	// The events must name a node.
	if _, err := l.Append(ctx, entry.Event{Kind: entry.KindBan}); !errors.Is(err, entry.ErrInvalidEvent) {
		t.Fatalf("ban without a node: %v", err)
	}
	if _, err := l.Append(ctx, entry.Event{Kind: entry.KindRevocation, Serial: "ab", Parent: "cd"}); !errors.Is(err, entry.ErrInvalidEvent) {
		t.Fatalf("revocation with a parent: %v", err)
	}
	if _, err := l.Append(ctx, entry.Event{Kind: entry.KindIssuance, Serial: "ab", SPIFFEID: agentA, Parent: "XY"}); !errors.Is(err, entry.ErrInvalidEvent) {
		t.Fatalf("parent not lower-case hex: %v", err)
	}
	// A ban on a later batch survives reopening, from the agents bucket.
	if _, err := l.Ban(ctx, "node-a", "stolen"); err != nil {
		t.Fatal(err)
	}
	l.Close()
	l2, err := Open(path, Config{Clock: clocktest.Func(clock.Now)})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if b, ok := l2.Banned("node-a"); !ok || b.Reason != "stolen" {
		t.Fatalf("after reopening: %+v %v", b, ok)
	}
}

func TestBanRevokesTheNodesUnexpiredCertificates(t *testing.T) {
	forBackends(t, func(t *testing.T, be backend) {
		clock := newFakeClock()
		l := be.openTest(t, clock)
		ctx := context.Background()
		live, dead := clock.Now().Add(time.Hour), clock.Now().Add(-time.Minute)
		evs := []entry.Event{certEvent(1, agentA, "node-a", live), certEvent(2, "spiffe://cluster.local/app", "node-a", live),
			certEvent(3, "spiffe://cluster.local/app", "node-a", dead), certEvent(4, "spiffe://cluster.local/app", "node-b", live)}
		if _, err := l.Append(ctx, evs...); err != nil {
			t.Fatal(err)
		}
		ch := l.BansChanged()
		size := l.Size()
		res, err := l.Ban(ctx, "node-a", "stolen")
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(res.Revoked) != fmt.Sprint([]string{evs[0].Serial, evs[1].Serial}) || res.Ban.Index != size {
			t.Fatalf("ban = %+v; want the two unexpired certificates of node-a revoked, ban at %d", res, size)
		}
		if l.Size() != size+3 {
			t.Fatalf("the ban appended %d entries, want 3 (ban + 2 revocations)", l.Size()-size)
		}
		select {
		case <-ch:
		default:
			t.Fatal("BansChanged not closed by the ban")
		}
		if l.IsRevoked(evs[3].Serial, clock.Now()) {
			t.Fatal("node-b's certificate revoked")
		}
		if _, err := l.Ban(ctx, "node-a", "again"); !errors.Is(err, agents.ErrAlreadyBanned) {
			t.Fatalf("second ban: %v", err)
		}
		// A certificate recorded for the banned node afterwards (an issuance
		// that raced with the ban) is revoked by RevokeNodeCertificates.
		late := certEvent(5, "spiffe://cluster.local/app", "node-a", live)
		if _, err := l.Append(ctx, late); err != nil {
			t.Fatal(err)
		}
		got, err := l.RevokeNodeCertificates(ctx, "node-a")
		if err != nil || fmt.Sprint(got) != fmt.Sprint([]string{late.Serial}) {
			t.Fatalf("RevokeNodeCertificates = %v, %v; want [%s]", got, err, late.Serial)
		}
		if _, err := l.Unban(ctx, "node-a", "re-imaged"); err != nil {
			t.Fatal(err)
		}
		if _, err := l.Unban(ctx, "node-a", "again"); !errors.Is(err, agents.ErrNotBanned) {
			t.Fatalf("second unban: %v", err)
		}
		if got, err := l.RevokeNodeCertificates(ctx, "node-a"); err != nil || got != nil {
			t.Fatalf("RevokeNodeCertificates of an unbanned node = %v, %v", got, err)
		}
		if !l.IsRevoked(evs[0].Serial, clock.Now()) {
			t.Fatal("the unban restored a revoked certificate")
		}
	})
}

// chain appends a lineage of n certificates, each renewed from the one
// before, and returns their serials.
func chain(t *testing.T, l *Ledger, start, n int, parent string, notAfter time.Time) []string {
	t.Helper()
	var out []string
	for i := range n {
		ev := certEvent(start+i, agentA, "node-a", notAfter)
		ev.Parent = parent
		if _, err := l.Append(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
		out, parent = append(out, ev.Serial), ev.Serial
	}
	return out
}

func TestLineageWalksAreBounded(t *testing.T) {
	forBackends(t, func(t *testing.T, be backend) {
		clock := newFakeClock()
		l := be.openTest(t, clock)
		ctx := context.Background()
		exp := clock.Now().Add(time.Hour)
		s := chain(t, l, 0, 6, "", exp)
		branch := chain(t, l, 100, 2, s[2], exp) // a second renewal of s[2]

		anc, truncated, err := l.Ancestors(ctx, s[5], 3)
		if err != nil || !truncated || len(anc) != 3 || anc[0].Serial != s[4] || anc[2].Serial != s[2] {
			t.Fatalf("Ancestors(max 3) = %v, %v, %v", serialsOf(anc), truncated, err)
		}
		anc, truncated, err = l.Ancestors(ctx, s[5], 10)
		if err != nil || truncated || len(anc) != 5 {
			t.Fatalf("Ancestors(max 10) = %v, %v, %v", serialsOf(anc), truncated, err)
		}
		desc, truncated, err := l.Descendants(ctx, s[2], 100)
		if err != nil || truncated || fmt.Sprint(serialsOf(desc)) != fmt.Sprint([]string{s[3], branch[0], s[4], branch[1], s[5]}) {
			t.Fatalf("Descendants = %v, %v, %v", serialsOf(desc), truncated, err)
		}
		if desc, truncated, _ = l.Descendants(ctx, s[0], 2); !truncated || len(desc) != 2 {
			t.Fatalf("Descendants(max 2) = %v, %v", serialsOf(desc), truncated)
		}
		if _, _, err := l.Descendants(ctx, "abcdef", 10); !errors.Is(err, entry.ErrNotFound) {
			t.Fatalf("Descendants of an unknown serial: %v", err)
		}

		// RevokedAncestor finds a revocation up the lineage, within its bound.
		if _, err := l.Revoke(ctx, s[1], "keyCompromise"); err != nil {
			t.Fatal(err)
		}
		rev, found, _, err := l.RevokedAncestor(ctx, s[5], 10, clock.Now())
		if err != nil || !found || rev.Serial != s[1] {
			t.Fatalf("RevokedAncestor(s5) = %s, %v, %v; want %s", rev.Serial, found, err, s[1])
		}
		if _, found, truncated, _ := l.RevokedAncestor(ctx, s[5], 2, clock.Now()); found || !truncated {
			t.Fatalf("RevokedAncestor beyond its bound: found %v truncated %v", found, truncated)
		}

		// Revoking s[2] with its descendants: one append, s[1] (already
		// revoked) and s[0] untouched.
		size := l.Size()
		revs, err := l.RevokeWithDescendants(ctx, s[2], "keyCompromise")
		if err != nil || len(revs) != 6 {
			t.Fatalf("RevokeWithDescendants = %v, %v; want 6", serialsOf(revs), err)
		}
		for i, r := range revs {
			if r.Index != size+uint64(i) {
				t.Fatalf("revocation %d at %d, want %d (one append)", i, r.Index, size+uint64(i))
			}
		}
		if l.IsRevoked(s[0], clock.Now()) {
			t.Fatal("an ancestor was revoked")
		}
		if _, err := l.RevokeWithDescendants(ctx, s[2], "again"); !errors.Is(err, revocation.ErrAlreadyRevoked) {
			t.Fatalf("second RevokeWithDescendants: %v", err)
		}
	})
}

func serialsOf(es []entry.Entry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.Serial
	}
	return out
}

// TestDamagedAgentRecordIsReported: a damaged agent record makes Open fail
// with a message naming the node, never a panic or a silently lost ban.
func TestDamagedAgentRecordIsReported(t *testing.T) {
	clock := newFakeClock()
	l, path := openTest(t, clock)
	if _, err := l.Ban(context.Background(), "node-a", "stolen"); err != nil {
		t.Fatal(err)
	}
	l.Close()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(index.AgentsBucket).Put([]byte("node-a"), []byte("{not json"))
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	l2, err := Open(path, Config{Clock: clocktest.Func(clock.Now)})
	if err == nil {
		l2.Close()
		t.Fatal("Open accepted a damaged agent record")
	}
	if !strings.Contains(err.Error(), "agent record of node node-a is damaged") {
		t.Fatalf("Open: %v; want an error naming the damaged record", err)
	}
}
