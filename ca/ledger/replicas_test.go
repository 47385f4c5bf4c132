package ledger

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/castellan-dev/castellan/ca/ledger/checkpoint"
	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/follow"
	"github.com/castellan-dev/castellan/ca/ledger/index"
	"github.com/castellan-dev/castellan/ca/ledger/revocation"
	"github.com/castellan-dev/castellan/ca/ledger/tree"
	"github.com/castellan-dev/castellan/ca/store"
	"github.com/castellan-dev/castellan/ca/verifier"
	"github.com/castellan-dev/castellan/internal/clock/clocktest"
)

// seenWithin is how soon a replica must see another's revocations and
// bans (the requirement: agents on every replica react within a
// second).
const seenWithin = time.Second

// waitClosed fails the test unless ch is closed within d (0: already).
func waitClosed(t *testing.T, ch <-chan struct{}, d time.Duration, what string) {
	t.Helper()
	if d == 0 {
		if !closed(ch) {
			t.Fatalf("%s not seen", what)
		}
		return
	}
	select {
	case <-ch:
	case <-time.After(d):
		t.Fatalf("%s not seen within %v", what, d)
	}
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestReplicasAppendIntoOneLog: appends made concurrently through two
// replicas interleave into one log, every index used exactly once, and
// each replica publishes all of them (Size, Watch, Entry) in order. The
// replicas' indexers race on one index position without reporting an
// error, and queries on either see every entry indexed.
func TestReplicasAppendIntoOneLog(t *testing.T) {
	forSharedBackends(t, func(t *testing.T, be backend) {
		clock := newFakeClock()
		var logs syncBuffer
		ls := be.replicas(t, 2, Config{Clock: clocktest.Func(clock.Now), Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		exp := clock.Now().Add(time.Hour)
		const workers, per = 4, 40
		var mu sync.Mutex
		owner := map[uint64]int{} // index -> serial number appended there
		var wg sync.WaitGroup
		for w := 0; w < 2*workers; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				for i := 0; i < per; i++ {
					n := w*per + i
					idx, err := ls[w%2].Append(context.Background(), certEvent(n, "spiffe://td/x", fmt.Sprintf("node-%d", w%2), exp))
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					if prev, dup := owner[idx[0]]; dup {
						t.Errorf("index %d given to serials %d and %d", idx[0], prev, n)
					}
					owner[idx[0]] = n
					mu.Unlock()
				}
			}(w)
		}
		wg.Wait()
		const total = 2 * workers * per
		for i := uint64(0); i < total; i++ {
			if _, ok := owner[i]; !ok {
				t.Fatalf("index %d was never returned: the log has a gap", i)
			}
		}
		for r, l := range ls {
			waitFor(t, fmt.Sprintf("replica %d to publish %d entries", r, total), func() bool { return l.Size() == total })
			var got []uint64
			ctx, cancel := context.WithCancel(context.Background())
			err := l.Watch(ctx, 0, func(e entry.Entry) error {
				if want := certEvent(owner[e.Index], "", "", exp).Serial; e.Serial != want {
					return fmt.Errorf("replica %d: entry %d has serial %s, appended %s", r, e.Index, e.Serial, want)
				}
				if got = append(got, e.Index); len(got) == total {
					cancel()
				}
				return nil
			})
			if !errors.Is(err, context.Canceled) {
				t.Fatal(err)
			}
			for i, idx := range got {
				if idx != uint64(i) {
					t.Fatalf("replica %d: Watch delivered %d at position %d", r, idx, i)
				}
			}
			page, _, err := l.List(context.Background(), index.Filter{SPIFFEID: "spiffe://td/x"}, index.MaxPageSize, "")
			if err != nil || len(page) != total {
				t.Fatalf("replica %d lists %d entries (%v), want %d", r, len(page), err, total)
			}
		}
		if strings.Contains(logs.String(), "level=ERROR") {
			t.Fatalf("errors logged:\n%s", logs.String())
		}
	})
}

// TestReplicasSeeEachOthersRevocationsAndBans: a certificate logged
// through one replica is revoked through the other at once; each replica
// sees the other's revocations and bans within a second
// (RevocationsChanged, BansChanged), and OnRevoke runs exactly once per
// replica and revocation.
func TestReplicasSeeEachOthersRevocationsAndBans(t *testing.T) {
	forSharedBackends(t, func(t *testing.T, be backend) {
		clock := newFakeClock()
		var onRevoke atomic.Int32
		ls := be.replicas(t, 2, Config{Clock: clocktest.Func(clock.Now), OnRevoke: func(node, id string) {
			if node == "n1" && id == "spiffe://td/a" {
				onRevoke.Add(1)
			}
		}})
		a, b := ls[0], ls[1]
		ctx := context.Background()
		ev := certEvent(1, "spiffe://td/a", "n1", clock.Now().Add(time.Hour))
		if _, err := a.Append(ctx, ev); err != nil {
			t.Fatal(err)
		}
		revCh := a.RevocationsChanged()
		if _, err := b.Revoke(ctx, ev.Serial, "keyCompromise"); err != nil {
			t.Fatalf("revoke through the other replica: %v", err)
		}
		waitClosed(t, revCh, seenWithin, "the other replica's revocation")
		if !a.IsRevoked(ev.Serial, clock.Now()) || len(a.RevokedSerials(clock.Now())) != 1 {
			t.Fatal("RevocationsChanged fired but the revocation is not in force")
		}
		if _, err := a.Revoke(ctx, ev.Serial, "again"); !errors.Is(err, revocation.ErrAlreadyRevoked) {
			t.Fatalf("second revocation through the first replica: %v, want revocation.ErrAlreadyRevoked", err)
		}
		banCh := b.BansChanged()
		if _, err := a.Ban(ctx, "n2", "stolen"); err != nil {
			t.Fatal(err)
		}
		waitClosed(t, banCh, seenWithin, "the other replica's ban")
		if ban, ok := b.Banned("n2"); !ok || ban.Reason != "stolen" {
			t.Fatalf("Banned = %+v %v", ban, ok)
		}
		banCh = a.BansChanged()
		if _, err := b.Unban(ctx, "n2", "cleared"); err != nil {
			t.Fatal(err)
		}
		waitClosed(t, banCh, seenWithin, "the other replica's unban")
		if _, ok := a.Banned("n2"); ok {
			t.Fatal("unban through the other replica not applied")
		}
		for _, l := range ls { // nothing is applied twice, even when asked again
			err := follow.FollowTo(l.Published, ctx, ^uint64(0))
			if err != nil {
				t.Fatal(err)
			}
		}
		if n := onRevoke.Load(); n != 2 {
			t.Fatalf("OnRevoke ran %d times for one revocation on two replicas, want 2", n)
		}
	})
}

// TestReplicasAgreeOnProofsAndCheckpoints: whichever replica answers,
// checkpoints and proofs are the same bytes, they cover the other
// replica's appends at once, and checkpoints taken on either are
// consistent with each other.
func TestReplicasAgreeOnProofsAndCheckpoints(t *testing.T) {
	forSharedBackends(t, func(t *testing.T, be backend) {
		clock := newFakeClock()
		ls := be.replicas(t, 2, Config{Clock: clocktest.Func(clock.Now)})
		a, b := ls[0], ls[1]
		ctx := context.Background()
		exp := clock.Now().Add(time.Hour)
		fillFrom(t, a, 0, 300, exp)
		old, err := b.Checkpoint(ctx) // b has appended nothing
		if err != nil {
			t.Fatal(err)
		}
		fillFrom(t, b, 300, 211, exp)
		cur, err := a.Checkpoint(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if cur2, err := b.Checkpoint(ctx); err != nil || !bytes.Equal(cur, cur2) {
			t.Fatalf("replicas sign different checkpoints of one log:\n%s\n%s (%v)", cur, cur2, err)
		}
		c1, err := verifier.OpenCheckpoint(old, "", a.VerifierKey())
		if err != nil {
			t.Fatal(err)
		}
		c2, err := verifier.OpenCheckpoint(cur, "", b.VerifierKey())
		if err != nil {
			t.Fatal(err)
		}
		if c1.Size != 300 || c2.Size != 511 {
			t.Fatalf("checkpoint sizes %d, %d; want 300, 511 (the stored log, whoever appended)", c1.Size, c2.Size)
		}
		pa, errA := a.ConsistencyProof(300, 511)
		pb, errB := b.ConsistencyProof(300, 511)
		if errA != nil || errB != nil || !equalHashes(pa, pb) {
			t.Fatalf("consistency proofs differ (%v, %v)", errA, errB)
		}
		if err := proof.VerifyConsistency(rfc6962.DefaultHasher, c1.Size, c2.Size, pa, c1.Hash, c2.Hash); err != nil {
			t.Fatal(err)
		}
		for _, i := range []uint64{0, 299, 300, 510} {
			e, err := a.Entry(ctx, i)
			if err != nil {
				t.Fatal(err)
			}
			pa, errA := a.InclusionProof(i, c2.Size)
			pb, errB := b.InclusionProof(i, c2.Size)
			if errA != nil || errB != nil || !equalHashes(pa, pb) {
				t.Fatalf("inclusion proofs of %d differ (%v, %v)", i, errA, errB)
			}
			if err := proof.VerifyInclusion(rfc6962.DefaultHasher, i, c2.Size, rfc6962.DefaultHasher.HashLeaf(e.Data), pa, c2.Hash); err != nil {
				t.Fatalf("entry %d: %v", i, err)
			}
		}
	})
}

func equalHashes(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// TestCheckpointNeverReplacedBySmallerOne: storing a checkpoint of a
// smaller tree than the stored one keeps (and returns) the stored one.
func TestCheckpointNeverReplacedBySmallerOne(t *testing.T) {
	forBackends(t, func(t *testing.T, be backend) {
		clock := newFakeClock()
		l := be.openTest(t, clock)
		ctx := context.Background()
		fill(t, l, 10, clock.Now().Add(time.Hour))
		big, err := l.Checkpoint(ctx)
		if err != nil {
			t.Fatal(err)
		}
		small, err := checkpoint.Sign(l.Checkpoints, tree.Head{})
		if err != nil {
			t.Fatal(err)
		}
		got, err := checkpoint.Store(l.Checkpoints, ctx, small, 0)
		if err != nil || !bytes.Equal(got, big) {
			t.Fatalf("storing a checkpoint of size 0 over one of size 10 returned %q (%v)", got, err)
		}
		if again, err := l.Checkpoint(ctx); err != nil || !bytes.Equal(again, big) {
			t.Fatalf("Checkpoint after = %q (%v)", again, err)
		}
	})
}

// TestFollowerRefusesRewrittenLog: a stored log that is not an extension
// of what a replica published (rolled back, or rewritten) is reported,
// and nothing of it is applied.
func TestFollowerRefusesRewrittenLog(t *testing.T) {
	forSharedBackends(t, func(t *testing.T, be backend) {
		clock := newFakeClock()
		dbs := be.stores(t, 2)
		opts := withKeyFile(t, t.TempDir(), Config{Clock: clocktest.Func(clock.Now)})
		l, err := New(dbs[0], opts)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		fill(t, l, 5, clock.Now().Add(time.Hour))
		ctx := context.Background()
		// Another writer appends one leaf but stores the head of a
		// different tree of that size.
		err = dbs[1].Update(ctx, func(tx store.Tx) error {
			if err := tx.Bucket(tree.Nodes).Put(tree.Key(5), bytes.Repeat([]byte{7}, tree.HashSize)); err != nil {
				return err
			}
			r, err := tree.Head{}.Range()
			if err != nil {
				return err
			}
			for i := 0; i < 6; i++ {
				if err := r.Append(bytes.Repeat([]byte{byte(i)}, tree.HashSize), nil); err != nil {
					return err
				}
			}
			return tree.Write(tx, r)
		})
		if err != nil {
			t.Fatal(err)
		}
		err = follow.FollowTo(l.Published, ctx, ^uint64(0))
		if !errors.Is(err, follow.ErrNotExtension) {
			t.Fatalf("follow of a rewritten log: %v, want errNotExtension", err)
		}
		if l.Size() != 5 {
			t.Fatalf("size %d after refusing the rewritten log, want 5", l.Size())
		}
	})
}

// flakyStore injects store failures: down fails every transaction with
// ErrUnavailable; unknownNext makes the next transaction that grows the
// log commit, then report ErrCommitUnknown (the connection lost during
// COMMIT).
type flakyStore struct {
	store.DB
	down, unknownNext atomic.Bool
}

var errOutage = fmt.Errorf("%w: injected outage", store.ErrUnavailable)

func (f *flakyStore) View(ctx context.Context, fn func(store.Tx) error) error {
	if f.down.Load() {
		return errOutage
	}
	return f.DB.View(ctx, fn)
}

func (f *flakyStore) Update(ctx context.Context, fn func(store.Tx) error) error {
	if f.down.Load() {
		return errOutage
	}
	grew := false
	tree := func(tx store.Tx) []byte {
		if meta := tx.Bucket(tree.Meta); meta != nil {
			return bytes.Clone(meta.Get(tree.KeyTree))
		}
		return nil
	}
	err := f.DB.Update(ctx, func(tx store.Tx) error {
		before := tree(tx)
		err := fn(tx)
		grew = !bytes.Equal(before, tree(tx))
		return err
	})
	if err == nil && grew && f.unknownNext.CompareAndSwap(true, false) {
		return fmt.Errorf("%w: injected", store.ErrCommitUnknown)
	}
	return err
}

func (f *flakyStore) Ping(ctx context.Context) error {
	if f.down.Load() {
		return errOutage
	}
	return f.DB.Ping(ctx)
}

// TestUnavailableStoreStopsAppendsWithUnavailable: while the store
// cannot be reached, Append and queries fail with an error Status maps to
// Unavailable (never NotFound, never an index), Ping fails, and nothing
// is logged; once it is back, the log goes on without a gap.
func TestUnavailableStoreStopsAppendsWithUnavailable(t *testing.T) {
	for _, shared := range []bool{false, true} {
		t.Run(fmt.Sprintf("shared=%v", shared), func(t *testing.T) {
			clock := newFakeClock()
			db := sharedBoltStores(t, 1)[0]
			if !shared {
				db = db.(sharedStore).DB
			}
			f := &flakyStore{DB: db}
			l, err := New(f, withKeyFile(t, t.TempDir(), Config{Clock: clocktest.Func(clock.Now)}))
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			ctx := context.Background()
			exp := clock.Now().Add(time.Hour)
			fill(t, l, 3, exp)
			f.down.Store(true)
			_, err = l.Append(ctx, certEvent(10, "spiffe://td/x", "n", exp))
			if got := status.Code(Status("server", err)); got != codes.Unavailable {
				t.Fatalf("Append on a lost store: %v (code %v), want Unavailable", err, got)
			}
			if _, err := l.Get(ctx, certEvent(0, "", "", exp).Serial); status.Code(Status("audit", err)) != codes.Unavailable {
				t.Fatalf("Get on a lost store: %v, want Unavailable", err)
			}
			if err := l.Ping(ctx); !errors.Is(err, store.ErrUnavailable) {
				t.Fatalf("Ping on a lost store: %v", err)
			}
			f.down.Store(false)
			idx, err := l.Append(ctx, certEvent(11, "spiffe://td/x", "n", exp))
			if err != nil || idx[0] != 3 || l.Size() != 4 {
				t.Fatalf("append after recovery: %v %v, size %d; want index 3, size 4", idx, err, l.Size())
			}
		})
	}
}

// TestCommitOfUnknownOutcomeIsPublishedWithTheNextAppend: an append
// whose commit outcome is unknown fails (its certificate is not issued),
// yet its entry is in the log; the next append finds it between the
// published head and its own index and publishes it first, in order and
// once (revocation in force, OnRevoke once).
func TestCommitOfUnknownOutcomeIsPublishedWithTheNextAppend(t *testing.T) {
	clock := newFakeClock()
	f := &flakyStore{DB: sharedBoltStores(t, 1)[0].(sharedStore).DB}
	var onRevoke atomic.Int32
	l, err := New(f, withKeyFile(t, t.TempDir(), Config{Clock: clocktest.Func(clock.Now), OnRevoke: func(string, string) { onRevoke.Add(1) }}))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx := context.Background()
	ev := certEvent(1, "spiffe://td/a", "n1", clock.Now().Add(time.Hour))
	if _, err := l.Append(ctx, ev); err != nil {
		t.Fatal(err)
	}
	revCh := l.RevocationsChanged()
	f.unknownNext.Store(true)
	_, err = l.Append(ctx, entry.Event{Kind: entry.KindRevocation, Serial: ev.Serial, Node: ev.Node, SPIFFEID: ev.SPIFFEID, NotAfter: ev.NotAfter})
	if !errors.Is(err, store.ErrCommitUnknown) || status.Code(Status("server", err)) != codes.Unavailable {
		t.Fatalf("append with an unknown commit outcome: %v", err)
	}
	if l.Size() != 1 || l.IsRevoked(ev.Serial, clock.Now()) {
		t.Fatal("an append reported as failed was published")
	}
	idx, err := l.Append(ctx, certEvent(2, "spiffe://td/b", "n1", clock.Now().Add(time.Hour)))
	if err != nil || idx[0] != 2 {
		t.Fatalf("next append: %v %v, want index 2", idx, err)
	}
	waitClosed(t, revCh, 0, "the revocation of unknown outcome")
	if l.Size() != 3 || !l.IsRevoked(ev.Serial, clock.Now()) || onRevoke.Load() != 1 {
		t.Fatalf("size %d, revoked %v, OnRevoke %d; want 3, true, 1", l.Size(), l.IsRevoked(ev.Serial, clock.Now()), onRevoke.Load())
	}
}
