package ledger

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/ledger/commit"
	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/follow"
	"github.com/castellan-dev/castellan/ca/ledger/logfile"
	"github.com/castellan-dev/castellan/ca/store"
	"github.com/castellan-dev/castellan/internal/clock/clocktest"
)

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// txProbe wraps the committer's real transaction: it records how many
// appends each transaction held, can hold the next transaction until
// released, and can fail a chosen transaction before it commits.
type txProbe struct {
	mu     sync.Mutex
	groups []int // appends per transaction attempt, in order
	hold   chan struct{}
	held   chan struct{} // receives when a transaction is being held
	failTx int           // 1-based attempt to fail with errInjected (0: none)
	real   func(func(store.Tx) error) error
}

var errInjected = errors.New("injected commit failure")

// probe replaces the ledger's committer (idle: nothing appended yet) by
// one whose transactions go through the probe.
func probe(l *Ledger) *txProbe { return probeWrite(l, l.appendTx) }

// probeWrite is probe with write writing each append's events.
func probeWrite(l *Ledger, write func(store.Tx, []entry.Event) (follow.Appended, error)) *txProbe {
	p := &txProbe{real: l.update, held: make(chan struct{}, 1)}
	old := l.commit
	l.commit = commit.New(p.update, p.countingWrite(write), l.publish)
	go l.commit.Run()
	old.Close()
	return p
}

// countingWrite counts the appends written in the current transaction.
func (p *txProbe) countingWrite(w func(store.Tx, []entry.Event) (follow.Appended, error)) func(store.Tx, []entry.Event) (follow.Appended, error) {
	return func(tx store.Tx, evs []entry.Event) (follow.Appended, error) {
		p.mu.Lock()
		p.groups[len(p.groups)-1]++
		p.mu.Unlock()
		return w(tx, evs)
	}
}

func (p *txProbe) update(fn func(store.Tx) error) error {
	p.mu.Lock()
	p.groups = append(p.groups, 0)
	attempt, hold := len(p.groups), p.hold
	p.hold = nil
	p.mu.Unlock()
	if hold != nil {
		p.held <- struct{}{}
		<-hold
	}
	if attempt == p.failTx {
		return errInjected // as a failed fsync: nothing of the transaction is kept
	}
	return p.real(fn)
}

// waitHeld waits until a transaction is being held, for at most 10 s.
func (p *txProbe) waitHeld(t *testing.T) {
	t.Helper()
	select {
	case <-p.held:
	case <-time.After(10 * time.Second):
		t.Fatal("no transaction started within 10 s")
	}
}

// holdNext makes the next transaction wait until the returned func runs.
// It releases at the test's cleanup at the latest, so a failing test
// does not leave Close waiting for it.
func (p *txProbe) holdNext(t *testing.T) (release func()) {
	ch := make(chan struct{})
	p.mu.Lock()
	p.hold = ch
	p.mu.Unlock()
	release = sync.OnceFunc(func() { close(ch) })
	t.Cleanup(release)
	return release
}

func (p *txProbe) attempts() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]int(nil), p.groups...)
}

// result is one concurrent Append's outcome.
type result struct {
	idx []uint64
	err error
}

// recv waits for an Append's result, failing the test after 10 s.
func recv(t *testing.T, ch <-chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("Append did not return within 10 s")
		return result{}
	}
}

// appendAsync starts Append(ctx, ev) and returns where its result arrives.
func appendAsync(ctx context.Context, l *Ledger, ev entry.Event) <-chan result {
	ch := make(chan result, 1)
	go func() {
		idx, err := l.Append(ctx, ev)
		ch <- result{idx, err}
	}()
	return ch
}

// startHeldGroup starts one append whose transaction is held, then n more
// that queue behind it; it returns the first's result, the others' and the
// release of the held transaction.
func startHeldGroup(t *testing.T, l *Ledger, p *txProbe, base, n int) (<-chan result, []<-chan result, func()) {
	t.Helper()
	release := p.holdNext(t)
	notAfter := time.Now().Add(time.Hour)
	first := appendAsync(context.Background(), l, certEvent(base, "spiffe://td/a", "n", notAfter))
	p.waitHeld(t)
	rest := make([]<-chan result, n)
	for i := range rest {
		rest[i] = appendAsync(context.Background(), l, certEvent(base+1+i, "spiffe://td/a", "n", notAfter))
	}
	waitFor(t, fmt.Sprintf("%d queued appends", n), func() bool { return l.commit.Queued() == n })
	return first, rest, release
}

func TestAppendWhileIdleIsCommittedAloneAtOnce(t *testing.T) {
	forBackends(t, func(t *testing.T, be backend) {
		l := be.openTest(t, newFakeClock())
		p := probe(l)
		for i := range 5 {
			idx, err := l.Append(context.Background(), certEvent(i, "spiffe://td/a", "n", time.Now()))
			if err != nil || len(idx) != 1 || idx[0] != uint64(i) {
				t.Fatalf("append %d: %v, %v", i, idx, err)
			}
		}
		// Each append had its own transaction: none waited to be grouped.
		if got := p.attempts(); fmt.Sprint(got) != "[1 1 1 1 1]" {
			t.Fatalf("appends per transaction = %v, want [1 1 1 1 1]", got)
		}
	})
}

func TestAppendsArrivingDuringACommitShareTheNextTransaction(t *testing.T) {
	l, path := openTest(t, newFakeClock())
	p := probe(l)
	first, rest, release := startHeldGroup(t, l, p, 0, 20)
	release()
	if r := recv(t, first); r.err != nil || r.idx[0] != 0 {
		t.Fatalf("first append: %v, %v", r.idx, r.err)
	}
	seen := map[uint64]bool{}
	for _, ch := range rest {
		r := recv(t, ch)
		if r.err != nil || seen[r.idx[0]] || r.idx[0] < 1 || r.idx[0] > 20 {
			t.Fatalf("grouped append: %v, %v", r.idx, r.err)
		}
		seen[r.idx[0]] = true
	}
	if got := p.attempts(); fmt.Sprint(got) != "[1 20]" {
		t.Fatalf("appends per transaction = %v, want [1 20]", got)
	}
	closeAndVerify(t, l, path, 21)
}

// closeAndVerify closes l and checks that the file holds a sound tree of
// n entries, under a checkpoint signed by a reopened ledger.
func closeAndVerify(t *testing.T, l *Ledger, path string, n uint64) {
	t.Helper()
	if got := l.Size(); got != n {
		t.Fatalf("Size() = %d, want %d", got, n)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := Open(path, Config{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.Checkpoint(context.Background())
	if cerr := r.Close(); err != nil || cerr != nil {
		t.Fatal(err, cerr)
	}
	rep, err := logfile.VerifyFile(path, r.VerifierKey())
	if err != nil || !rep.OK() || rep.Entries != n {
		t.Fatalf("verify: %v %+v, want %d entries", err, rep, n)
	}
}

func TestGroupedAppendsArePublishedInLogOrder(t *testing.T) {
	forBackends(t, func(t *testing.T, be backend) {
		l := be.openTest(t, newFakeClock())
		p := probe(l)
		release := p.holdNext(t)
		first := appendAsync(context.Background(), l, certEvent(0, "spiffe://td/a", "n", time.Now()))
		p.waitHeld(t)
		// A ban then an unban of the same node, queued in that order, share a
		// transaction: the node must end up not banned.
		ban := appendAsync(context.Background(), l, entry.Event{Kind: entry.KindBan, Node: "node-x", Reason: "test"})
		waitFor(t, "the ban to queue", func() bool { return l.commit.Queued() == 1 })
		unban := appendAsync(context.Background(), l, entry.Event{Kind: entry.KindUnban, Node: "node-x", Reason: "test"})
		waitFor(t, "the unban to queue", func() bool { return l.commit.Queued() == 2 })
		release()
		for _, ch := range []<-chan result{first, ban, unban} {
			if r := recv(t, ch); r.err != nil {
				t.Fatal(r.err)
			}
		}
		if got := p.attempts(); fmt.Sprint(got) != "[1 2]" {
			t.Fatalf("appends per transaction = %v, want [1 2]", got)
		}
		if b, banned := l.Banned("node-x"); banned {
			t.Fatalf("node-x is banned (%+v) although its unban came after the ban", b)
		}
	})
}

func TestBadEventFailsOnlyItsOwnAppendInAGroup(t *testing.T) {
	l, path := openTest(t, newFakeClock())
	badSerial := fmt.Sprintf("%x", 0x1000+7)
	errBad := errors.New("cannot write this event")
	p := probeWrite(l, func(tx store.Tx, evs []entry.Event) (follow.Appended, error) {
		if evs[0].Serial == badSerial {
			// Write part of it first: the retry must not keep any of it.
			if _, err := l.appendTx(tx, evs); err != nil {
				return follow.Appended{}, err
			}
			return follow.Appended{}, errBad
		}
		return l.appendTx(tx, evs)
	})
	first, rest, release := startHeldGroup(t, l, p, 0, 10) // serials 1..10 share a group
	release()
	if r := recv(t, first); r.err != nil {
		t.Fatal(r.err)
	}
	for i, ch := range rest {
		r := recv(t, ch)
		if serial := 1 + i; serial == 7 {
			if !errors.Is(r.err, errBad) || r.idx != nil {
				t.Fatalf("bad append: %v, %v; want its own error", r.idx, r.err)
			}
		} else if r.err != nil {
			t.Fatalf("append of serial %d failed with its group's bad neighbour: %v", serial, r.err)
		}
	}
	if _, err := l.Get(context.Background(), badSerial); !errors.Is(err, entry.ErrNotFound) {
		t.Fatalf("bad event is in the log: %v", err)
	}
	// One held transaction, one attempt with the bad append, one without.
	if got := p.attempts(); len(got) != 3 || got[1] < 1 || got[2] != 9 {
		t.Fatalf("appends per transaction attempt = %v, want [1 >=1 9]", got)
	}
	closeAndVerify(t, l, path, 10)
}

func TestFailedCommitFailsExactlyTheAppendsOfItsTransaction(t *testing.T) {
	l, path := openTest(t, newFakeClock())
	p := probe(l)
	p.failTx = 2 // the grouped transaction
	first, rest, release := startHeldGroup(t, l, p, 0, 5)
	release()
	if r := recv(t, first); r.err != nil {
		t.Fatal(r.err)
	}
	for _, ch := range rest {
		if r := recv(t, ch); !errors.Is(r.err, errInjected) || r.idx != nil {
			t.Fatalf("append in the failed transaction: %v, %v", r.idx, r.err)
		}
	}
	// The next transaction is unaffected and the log has no gap.
	idx, err := l.Append(context.Background(), certEvent(100, "spiffe://td/a", "n", time.Now()))
	if err != nil || idx[0] != 1 {
		t.Fatalf("append after the failure: %v, %v", idx, err)
	}
	for i := 1; i <= 5; i++ {
		if _, err := l.Get(context.Background(), fmt.Sprintf("%x", 0x1000+i)); !errors.Is(err, entry.ErrNotFound) {
			t.Fatalf("serial %d of the failed transaction is in the log: %v", i, err)
		}
	}
	closeAndVerify(t, l, path, 2)
}

func TestCancelledQueuedAppendIsWithdrawnAndNeverWritten(t *testing.T) {
	l, path := openTest(t, newFakeClock())
	p := probe(l)
	release := p.holdNext(t)
	notAfter := time.Now().Add(time.Hour)
	first := appendAsync(context.Background(), l, certEvent(0, "spiffe://td/a", "n", notAfter))
	p.waitHeld(t)
	ctx, cancel := context.WithCancel(context.Background())
	gone := appendAsync(ctx, l, certEvent(1, "spiffe://td/a", "n", notAfter))
	kept := appendAsync(context.Background(), l, certEvent(2, "spiffe://td/a", "n", notAfter))
	waitFor(t, "2 queued appends", func() bool { return l.commit.Queued() == 2 })
	cancel()
	if r := recv(t, gone); !errors.Is(r.err, context.Canceled) || r.idx != nil {
		t.Fatalf("cancelled append: %v, %v", r.idx, r.err)
	}
	if n := l.commit.Queued(); n != 1 {
		t.Fatalf("%d appends queued after the cancel, want 1", n)
	}
	release()
	if r := recv(t, first); r.err != nil || r.idx[0] != 0 {
		t.Fatalf("first: %v, %v", r.idx, r.err)
	}
	if r := recv(t, kept); r.err != nil || r.idx[0] != 1 {
		t.Fatalf("append queued with the cancelled one: %v, %v", r.idx, r.err)
	}
	if _, err := l.Get(context.Background(), fmt.Sprintf("%x", 0x1001)); !errors.Is(err, entry.ErrNotFound) {
		t.Fatalf("withdrawn append is in the log: %v", err)
	}
	closeAndVerify(t, l, path, 2)
}

func TestCancelDuringItsCommitReportsTheCommit(t *testing.T) {
	l, path := openTest(t, newFakeClock())
	p := probe(l)
	release := p.holdNext(t)
	ctx, cancel := context.WithCancel(context.Background())
	res := appendAsync(ctx, l, certEvent(0, "spiffe://td/a", "n", time.Now()))
	p.waitHeld(t) // the append is in a transaction
	cancel()
	select {
	case r := <-res:
		t.Fatalf("Append returned %v, %v before its transaction ended", r.idx, r.err)
	default:
	}
	release()
	// The events are durable, so the answer is success, not the cancellation.
	if r := recv(t, res); r.err != nil || r.idx[0] != 0 {
		t.Fatalf("append cancelled during its commit: %v, %v", r.idx, r.err)
	}
	closeAndVerify(t, l, path, 1)
}

func TestCloseCommitsQueuedAppendsAndRefusesLaterOnes(t *testing.T) {
	l, path := openTest(t, newFakeClock())
	p := probe(l)
	first, rest, release := startHeldGroup(t, l, p, 0, 8)
	closed := make(chan error, 1)
	go func() { closed <- l.Close() }()
	waitFor(t, "Close to refuse new appends", l.commit.Closed)
	if _, err := l.Append(context.Background(), certEvent(99, "spiffe://td/a", "n", time.Now())); !errors.Is(err, entry.ErrClosed) {
		t.Fatalf("append during Close: %v, want ErrClosed", err)
	}
	release()
	for _, ch := range append([]<-chan result{first}, rest...) {
		if r := recv(t, ch); r.err != nil {
			t.Fatalf("append queued before Close: %v", r.err)
		}
	}
	var cerr error
	select {
	case cerr = <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return within 10 s")
	}
	if cerr != nil {
		t.Fatal(cerr)
	}
	closeAndVerify(t, l, path, 9)
}

func TestAppendsLeaveNoGoroutineBehind(t *testing.T) {
	before := runtime.NumGoroutine()
	clock := newFakeClock()
	l, err := Open(filepath.Join(t.TempDir(), "l.db"), Config{Clock: clocktest.Func(clock.Now)})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 10 {
				ctx, cancel := context.WithCancel(context.Background())
				switch i % 3 {
				case 0:
					cancel() // gives up before asking
				case 1:
					go cancel() // gives up while queued or being committed
				}
				_, _ = l.Append(ctx, certEvent(g*100+i, "spiffe://td/a", "n", time.Now()))
				cancel()
			}
		}()
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "goroutines to exit", func() bool { return runtime.NumGoroutine() <= before })
}
