package ledger

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/index"
	"github.com/castellan-dev/castellan/ca/ledger/tree"
	"github.com/castellan-dev/castellan/ca/store"
	"github.com/castellan-dev/castellan/ca/store/boltstore"
	"github.com/castellan-dev/castellan/internal/clock/clocktest"
	bolt "go.etcd.io/bbolt"
)

// countingStore counts the Update transactions run on a store and
// records, for each, the buckets it wrote to.
type countingStore struct {
	store.DB
	updates    atomic.Int64
	entryReads atomic.Int64 // entries read in Views (cursor steps in the entries bucket)
	mu         sync.Mutex
	written    []map[string]bool // per committed Update, the buckets it put to or deleted from
}

func (c *countingStore) View(ctx context.Context, fn func(store.Tx) error) error {
	return c.DB.View(ctx, func(tx store.Tx) error { return fn(recordingTx{Tx: tx, reads: &c.entryReads}) })
}

func (c *countingStore) Update(ctx context.Context, fn func(store.Tx) error) error {
	c.updates.Add(1)
	w := map[string]bool{}
	err := c.DB.Update(ctx, func(tx store.Tx) error { return fn(recordingTx{Tx: tx, written: w}) })
	if err == nil {
		c.mu.Lock()
		c.written = append(c.written, w)
		c.mu.Unlock()
	}
	return err
}

// writes returns the buckets written by each committed Update so far.
func (c *countingStore) writes() []map[string]bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.written)
}

// recordingTx notes the buckets written through it (an Update) or counts
// the entries read through it (a View).
type recordingTx struct {
	store.Tx
	written map[string]bool
	reads   *atomic.Int64
}

func (tx recordingTx) Bucket(name []byte) store.Bucket {
	b := tx.Tx.Bucket(name)
	if b == nil {
		return nil
	}
	return recordingBucket{b, string(name), tx.written, tx.reads}
}

func (tx recordingTx) CreateBucketIfNotExists(name []byte) (store.Bucket, error) {
	b, err := tx.Tx.CreateBucketIfNotExists(name)
	if err != nil {
		return nil, err
	}
	return recordingBucket{b, string(name), tx.written, tx.reads}, nil
}

// recordingBucket notes a Put or Delete in its transaction's written set,
// and counts the entries a View's cursors step over.
type recordingBucket struct {
	store.Bucket
	name    string
	written map[string]bool
	reads   *atomic.Int64
}

func (b recordingBucket) Cursor() store.Cursor {
	c := b.Bucket.Cursor()
	if b.reads == nil || b.name != string(tree.Entries) {
		return c
	}
	return countingCursor{c, b.reads}
}

func (b recordingBucket) Get(k []byte) []byte {
	if b.reads != nil && b.name == string(tree.Entries) {
		b.reads.Add(1)
	}
	return b.Bucket.Get(k)
}

// countingCursor counts the keys it lands on.
type countingCursor struct {
	store.Cursor
	reads *atomic.Int64
}

func (c countingCursor) count(k, v []byte) ([]byte, []byte) {
	if k != nil {
		c.reads.Add(1)
	}
	return k, v
}

func (c countingCursor) First() ([]byte, []byte)        { return c.count(c.Cursor.First()) }
func (c countingCursor) Seek(s []byte) ([]byte, []byte) { return c.count(c.Cursor.Seek(s)) }
func (c countingCursor) Next() ([]byte, []byte)         { return c.count(c.Cursor.Next()) }

func (b recordingBucket) Put(k, v []byte) error {
	b.written[b.name] = true
	return b.Bucket.Put(k, v)
}

func (b recordingBucket) Delete(k []byte) error {
	b.written[b.name] = true
	return b.Bucket.Delete(k)
}

// countedLedger opens a ledger with New on a fresh store of be (bbolt: a
// file of its own, not shared) whose Updates are counted.
func countedLedger(t *testing.T, be backend, clock *fakeClock) (*Ledger, *countingStore) {
	t.Helper()
	var db store.DB
	if be.stores == nil {
		b, err := boltstore.Open(filepath.Join(t.TempDir(), "ledger.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		db = b
	} else {
		db = be.stores(t, 1)[0]
	}
	cs := &countingStore{DB: db}
	l, err := New(cs, withKeyFile(t, t.TempDir(), Config{Clock: clocktest.Func(clock.Now)}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, cs
}

// mixedEvents returns one event of every kind that writes index entries,
// with times in a zone other than UTC and a monotonic reading (as
// time.Now gives): an issuance, its renewal (parent), an agent SVID, a
// join-token use, a ban, an unban and, appended by Revoke, a revocation.
func mixedEvents(now time.Time) []entry.Event {
	zone := time.FixedZone("east", 5*3600+30*60)
	at := time.Now().In(zone)
	na := now.Add(time.Hour).In(zone)
	iss := certEvent(1, "spiffe://td/ns/a/sa/x", "n1", na)
	iss.Time = at
	ren := certEvent(2, "spiffe://td/ns/a/sa/x", "n1", na.Add(time.Minute))
	ren.Kind, ren.Parent = entry.KindRenewal, iss.Serial
	agent := certEvent(3, "spiffe://td/castellan/agent/n1", "n1", na)
	agent.Time = at
	return []entry.Event{
		iss, ren, agent,
		{Kind: entry.KindJoinTokenUse, Node: "n1", Time: at},
		{Kind: entry.KindBan, Node: "n2", Reason: "stolen", Time: at},
		{Kind: entry.KindUnban, Node: "n2", Reason: "cleared"},
		{Kind: entry.KindCAKeyChange, Reason: "rotated"},
	}
}

// appendMixed appends mixedEvents one call at a time, then revokes the
// first certificate.
func appendMixed(t *testing.T, l *Ledger, now time.Time) []entry.Event {
	t.Helper()
	evs := mixedEvents(now)
	for _, ev := range evs {
		if _, err := l.Append(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.Revoke(context.Background(), evs[0].Serial, "keyCompromise"); err != nil {
		t.Fatal(err)
	}
	return evs
}

// indexBuckets are the buckets the index entries live in.
var indexBuckets = append(index.Buckets(), index.AgentsBucket, index.ParentBucket)

// Index buckets the tests look into (their names are the stored format).
var (
	bSerial  = []byte("by_serial")
	bRevoked = []byte("revoked")
)

// dumpIndexes returns every index key and value, by bucket, and the
// stored index position.
func dumpIndexes(t *testing.T, l *Ledger) (map[string]map[string]string, uint64) {
	t.Helper()
	out := map[string]map[string]string{}
	var pos uint64
	err := l.db.View(context.Background(), func(tx store.Tx) error {
		pos = index.Stored(tx)
		for _, name := range indexBuckets {
			m := map[string]string{}
			if b := tx.Bucket(name); b != nil {
				if err := b.ForEach(func(k, v []byte) error { m[string(k)] = string(v); return nil }); err != nil {
					return err
				}
			}
			out[string(name)] = m
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out, pos
}

// wipeIndexes deletes every index entry and moves the stored index
// position back to from, as a log written by a binary that left indexing
// to the indexer looks with [from, size) not yet indexed (from 0: none).
func wipeIndexes(t *testing.T, l *Ledger, from uint64) {
	t.Helper()
	err := l.db.Update(context.Background(), func(tx store.Tx) error {
		for _, name := range indexBuckets {
			b := tx.Bucket(name)
			if b == nil {
				continue
			}
			var keys [][]byte
			if err := b.ForEach(func(k, _ []byte) error { keys = append(keys, append([]byte(nil), k...)); return nil }); err != nil {
				return err
			}
			for _, k := range keys {
				if err := b.Delete(k); err != nil {
					return err
				}
			}
		}
		return tree.Bucket(tx, tree.Meta).Put(tree.KeyIndexed, binary.BigEndian.AppendUint64(nil, from))
	})
	if err != nil {
		t.Fatal(err)
	}
}

// reindex runs the indexer over everything not indexed, as it does for a
// backlog, and fails the test if it cannot.
func reindex(t *testing.T, l *Ledger) {
	t.Helper()
	if err := index.CatchUp(l.Index); err != nil {
		t.Fatal(err)
	}
}

// checkMixedIndexed checks that the stored index position is the log size
// and the indexes hold what appendMixed appended, when (a moment).
func checkMixedIndexed(t *testing.T, l *Ledger, when string) {
	t.Helper()
	idx, pos := dumpIndexes(t, l)
	if pos != l.Size() {
		t.Fatalf("stored index position %d %s, want the log size %d", pos, when, l.Size())
	}
	if len(idx[string(bSerial)]) != 4 || len(idx[string(bRevoked)]) != 1 || len(idx[string(index.ParentBucket)]) != 1 || len(idx[string(index.AgentsBucket)]) != 2 {
		t.Fatalf("index entries missing %s: %v", when, idx)
	}
}

// TestAppendIndexesInItsOwnTransaction: on a shared store an Append
// writes its entries' index keys in its own transaction: one Update per append on an idle
// ledger, never a second one by the indexer (even when a query then
// waits for the indexes), and the stored index position equals the log
// size as soon as Append returns.
func TestAppendIndexesInItsOwnTransaction(t *testing.T) {
	forSharedBackends(t, func(t *testing.T, be backend) {
		clock := newFakeClock()
		l, cs := countedLedger(t, be, clock)
		before := cs.updates.Load()
		evs := appendMixed(t, l, clock.Now())
		want := int64(len(evs) + 1) // and the revocation
		if got := cs.updates.Load() - before; got != want {
			t.Fatalf("%d appends ran %d Update transactions, want one each", want, got)
		}
		checkMixedIndexed(t, l, "right after the appends")
		got, err := l.Get(context.Background(), evs[1].Serial)
		if err != nil || got.Serial != evs[1].Serial {
			t.Fatalf("Get(%s) = %+v, %v", evs[1].Serial, got, err)
		}
		if ag, err := l.Agent(context.Background(), "n1"); err != nil || ag.Serial != evs[2].Serial {
			t.Fatalf("Agent(n1) = %+v, %v", ag, err)
		}
		if got := cs.updates.Load() - before; got != want {
			t.Fatalf("queries after the appends ran %d more Update transactions (an indexer pass), want none", got-want)
		}
		checkTreeAndIndexed(t, l)
	})
}

// TestAppendWritesNoIndexKey: on the ledger's own bbolt file an append's
// transaction writes the entries and the tree, never an index bucket (the
// indexer's transactions write those, and no entry); the queries after
// the appends wait for the indexer and see every entry, and the stored
// index position is then the log size.
func TestAppendWritesNoIndexKey(t *testing.T) {
	for _, be := range backends() {
		if be.stores != nil {
			continue // shared: appends index (TestAppendIndexesInItsOwnTransaction)
		}
		clock := newFakeClock()
		l, cs := countedLedger(t, be, clock)
		evs := appendMixed(t, l, clock.Now())
		got, err := l.Get(context.Background(), evs[1].Serial)
		if err != nil || got.Serial != evs[1].Serial {
			t.Fatalf("Get(%s) = %+v, %v", evs[1].Serial, got, err)
		}
		if ag, err := l.Agent(context.Background(), "n1"); err != nil || ag.Serial != evs[2].Serial {
			t.Fatalf("Agent(n1) = %+v, %v", ag, err)
		}
		checkMixedIndexed(t, l, "after the queries")
		appends, indexing := 0, 0
		for _, w := range cs.writes() {
			switch {
			case w[string(tree.Entries)]:
				appends++
				for _, name := range indexBuckets {
					if w[string(name)] {
						t.Errorf("an append's transaction wrote index bucket %s: %v", name, w)
					}
				}
			case w[string(bSerial)]:
				indexing++
			}
		}
		if appends != len(evs)+1 || indexing == 0 { // and the revocation
			t.Fatalf("%d transactions wrote entries (want %d, one per append), %d indexed", appends, len(evs)+1, indexing)
		}
		checkTreeAndIndexed(t, l)
	}
}

// TestIndexerTakesCommittedEventsFromMemory: on the ledger's own bbolt
// file the indexer indexes what this ledger appended from the events in
// memory, without reading the entries back (it reads them only when a
// pass starts between an append's commit and its hand-over, or after a
// gap), and what it writes is what a pass reading the store writes
// (TestIndexesWrittenInStepsAreAFullReindex).
func TestIndexerTakesCommittedEventsFromMemory(t *testing.T) {
	clock := newFakeClock()
	l, cs := countedLedger(t, backend{name: "bbolt"}, clock)
	const appends, per = 20, 10
	for a := range appends {
		evs := make([]entry.Event, per)
		for i := range evs {
			n := a*per + i + 1
			evs[i] = certEvent(n, fmt.Sprintf("spiffe://td/w%d", n), "n1", clock.Now().Add(time.Hour))
		}
		if _, err := l.Append(context.Background(), evs...); err != nil {
			t.Fatal(err)
		}
	}
	if err := index.Wait(l.Index, context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, pos := dumpIndexes(t, l); pos != appends*per {
		t.Fatalf("index position %d, want %d", pos, appends*per)
	}
	if reads := cs.entryReads.Load(); reads >= appends*per/2 {
		t.Fatalf("the indexer read %d entries back from the store for %d appended by this ledger", reads, appends*per)
	}
	wipeIndexes(t, l, 0) // nothing in memory covers [0, 200) any more: the store is read
	before := cs.entryReads.Load()
	reindex(t, l)
	if reads := cs.entryReads.Load() - before; reads < appends*per {
		t.Fatalf("a reindex from 0 read %d entries, want all %d", reads, appends*per)
	}
}

// TestIndexesWrittenInStepsAreAFullReindex: the indexes built a few
// entries at a time as appends come (by the indexer on the ledger's own
// file, by the appends from their events in memory on a shared store;
// events in any zone, with monotonic readings) are byte for byte those of
// one indexer pass over the whole log, so queries cannot tell how they
// were built.
func TestIndexesWrittenInStepsAreAFullReindex(t *testing.T) {
	forBackends(t, func(t *testing.T, be backend) {
		clock := newFakeClock()
		l, _ := countedLedger(t, be, clock)
		appendMixed(t, l, clock.Now())
		fill(t, l, 50, clock.Now().Add(time.Hour))
		if err := index.Wait(l.Index, context.Background()); err != nil {
			t.Fatal(err)
		}
		inSteps, pos := dumpIndexes(t, l)
		wipeIndexes(t, l, 0)
		reindex(t, l)
		inOnePass, pos2 := dumpIndexes(t, l)
		if pos != pos2 || pos != l.Size() {
			t.Fatalf("index position %d after the appends, %d after one pass, log size %d", pos, pos2, l.Size())
		}
		for _, name := range slices.Sorted(maps.Keys(inOnePass)) {
			if !maps.Equal(inSteps[name], inOnePass[name]) {
				t.Errorf("bucket %s: built in steps\n%q\nin one pass\n%q", name, inSteps[name], inOnePass[name])
			}
		}
	})
}

// TestAppendAfterABacklogLeavesItToTheIndexer: when the stored index
// position is behind the log (a log written by an older binary, or an
// index write that failed), an append does not index its own entries out
// of order: the indexer works through the backlog in order when a query
// hurries it, and the result is the indexes of a full reindex. On a shared
// store the appends after that index themselves again.
func TestAppendAfterABacklogLeavesItToTheIndexer(t *testing.T) {
	forBackends(t, func(t *testing.T, be backend) {
		clock := newFakeClock()
		l, cs := countedLedger(t, be, clock)
		ctx := context.Background()
		fill(t, l, 20, clock.Now().Add(time.Hour))
		wipeIndexes(t, l, 5) // [5, 20) unindexed; [0, 5) lost too, so a rewrite would show
		if _, err := l.Append(ctx, certEvent(100, "spiffe://td/late", "n9", clock.Now().Add(time.Hour))); err != nil {
			t.Fatal(err)
		}
		if _, pos := dumpIndexes(t, l); pos != 5 && pos != l.Size() {
			// 5: left to the indexer; the size: the indexer (kicked) ran.
			t.Fatalf("index position %d after an append behind a backlog, want 5 or %d", pos, l.Size())
		}
		got, _, err := l.List(ctx, index.Filter{SPIFFEID: "spiffe://td/late"}, 10, "")
		if err != nil || len(got) != 1 {
			t.Fatalf("List after the backlog = %d entries, %v", len(got), err)
		}
		if e, err := l.Get(ctx, fmt.Sprintf("%x", 0x1000+7)); err != nil || e.Index != 7 {
			t.Fatalf("backlog entry 7: %+v, %v", e, err)
		}
		idx, pos := dumpIndexes(t, l)
		if pos != l.Size() || len(idx[string(bSerial)]) != 16 {
			t.Fatalf("after the query: position %d of %d, %d serials indexed, want entries [5, 21)", pos, l.Size(), len(idx[string(bSerial)]))
		}
		if be.stores == nil {
			return // the ledger's own file: the indexer indexes every append
		}
		before := cs.updates.Load()
		if _, err := l.Append(ctx, certEvent(101, "spiffe://td/later", "n9", clock.Now().Add(time.Hour))); err != nil {
			t.Fatal(err)
		}
		if _, pos := dumpIndexes(t, l); pos != l.Size() || cs.updates.Load()-before != 1 {
			t.Fatalf("append after the backlog: position %d of %d, %d Updates; want it indexed in its own one", pos, l.Size(), cs.updates.Load()-before)
		}
	})
}

// TestCloseIndexesWhatWasAppended: Close brings the indexes up to date
// (the indexer waits a moment after an append before it runs), so a file
// closed right after an append is fully indexed when opened again, even
// read-only for forensics, whose queries read the indexes as they are.
func TestCloseIndexesWhatWasAppended(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ledger.db")
	cfg := withKeyFile(t, dir, Config{})
	l, err := Open(path, cfg)
	if err != nil {
		t.Fatal(err)
	}
	evs := make([]entry.Event, 30)
	for i := range evs {
		evs[i] = certEvent(i+1, fmt.Sprintf("spiffe://td/w%d", i), "n1", time.Now().Add(time.Hour))
	}
	if _, err := l.Append(context.Background(), evs...); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	cfg.ReadOnly = true
	ro, err := Open(path, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if pos, size := index.Position(ro.Index), ro.Size(); pos != size || size != 30 {
		t.Fatalf("after Close the stored index position is %d of %d entries", pos, size)
	}
	got, _, err := ro.List(context.Background(), index.Filter{SPIFFEID: "spiffe://td/w29"}, 10, "")
	if err != nil || len(got) != 1 {
		t.Fatalf("forensic List of the last entry = %d entries, %v", len(got), err)
	}
}

// TestForensicOpenWarnsOfUnindexedEntries: a file whose last entries the
// indexer never reached (the CA was killed) is served read-only as it is,
// and the log says how many entries Get and List cannot show.
func TestForensicOpenWarnsOfUnindexedEntries(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ledger.db")
	cfg := withKeyFile(t, dir, Config{})
	l, err := Open(path, cfg)
	if err != nil {
		t.Fatal(err)
	}
	fill(t, l, 12, time.Now().Add(time.Hour))
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, nil) // as a kill before the indexer ran leaves it
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(tree.Meta).Put(tree.KeyIndexed, binary.BigEndian.AppendUint64(nil, 9))
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	var logged strings.Builder
	cfg.ReadOnly, cfg.Logger = true, slog.New(slog.NewTextHandler(&logged, nil))
	ro, err := Open(path, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if !strings.Contains(logged.String(), "not in its indexes") || !strings.Contains(logged.String(), "unindexed_entries=3 first_unindexed=9") {
		t.Fatalf("forensic open of a file with 3 unindexed entries logged:\n%s", logged.String())
	}
}

// TestAuditLinePerEvent: every appended event gets one JSON audit line,
// in log order, with the audit marker and the event's fields, and
// nothing is formatted when the logger drops Info.
func TestAuditLinePerEvent(t *testing.T) {
	clock := newFakeClock()
	var buf syncBuffer
	l, err := Open(filepath.Join(t.TempDir(), "ledger.db"), Config{Clock: clocktest.Func(clock.Now), Logger: slog.New(slog.NewJSONHandler(&buf, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	evs := []entry.Event{certEvent(1, "spiffe://td/a", "n1", clock.Now().Add(time.Hour)), {Kind: entry.KindBan, Node: "n2", Reason: "stolen"}}
	if _, err := l.Append(context.Background(), evs...); err != nil {
		t.Fatal(err)
	}
	var lines []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		if m["msg"] == "ledger event" {
			lines = append(lines, m)
		}
	}
	if len(lines) != 2 {
		t.Fatalf("%d audit lines for 2 events: %s", len(lines), buf.String())
	}
	want := []map[string]any{
		{"audit": "castellan.ledger", "index": 0.0, "kind": "issuance", "serial": evs[0].Serial, "spiffe_id": "spiffe://td/a", "node": "n1", "not_after": entry.FormatTime(evs[0].NotAfter), "public_key_sha256": evs[0].PublicKeySHA256},
		{"audit": "castellan.ledger", "index": 1.0, "kind": "ban", "node": "n2", "reason": "stolen", "time": entry.FormatTime(clock.Now())},
	}
	for i, w := range want {
		for k, v := range w {
			if lines[i][k] != v {
				t.Errorf("audit line %d: %s = %v, want %v (%v)", i, k, lines[i][k], v, lines[i])
			}
		}
	}
	for _, k := range []string{"serial", "spiffe_id", "not_after", "public_key_sha256"} {
		if v, ok := lines[1][k]; ok { // the lines share one attribute list
			t.Errorf("the ban's audit line has %s = %v, from the line before it: %v", k, v, lines[1])
		}
	}
	quiet, err := Open(filepath.Join(t.TempDir(), "quiet.db"), Config{Logger: slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		t.Fatal(err)
	}
	defer quiet.Close()
	before := buf.String()
	if _, err := quiet.Append(context.Background(), evs...); err != nil {
		t.Fatal(err)
	}
	if buf.String() != before {
		t.Fatalf("a logger at Warn received audit lines: %s", strings.TrimPrefix(buf.String(), before))
	}
}

// checkTreeAndIndexed fails t unless readTreeAndIndexed (one cursor) reads
// what readTree and indexedOf read, in a View and in an Update after a
// write of both (which a cursor must merge with the stored keys).
func checkTreeAndIndexed(t *testing.T, l *Ledger) {
	t.Helper()
	check := func(tx store.Tx) error {
		st, indexed, err := tree.ReadWithIndexed(tx)
		want, werr := tree.Read(tx)
		if err != nil || werr != nil || st.Size != want.Size || !slices.EqualFunc(st.Hashes, want.Hashes, bytes.Equal) || indexed != index.Stored(tx) {
			t.Errorf("readTreeAndIndexed = size %d, position %d, %v; readTree, indexedOf = size %d, position %d, %v",
				st.Size, indexed, err, want.Size, index.Stored(tx), werr)
		}
		return nil
	}
	if err := l.db.View(context.Background(), check); err != nil {
		t.Fatal(err)
	}
	errRollback := errors.New("roll back")
	err := l.db.Update(context.Background(), func(tx store.Tx) error {
		meta := tree.Bucket(tx, tree.Meta)
		if err := meta.Put(tree.KeyIndexed, binary.BigEndian.AppendUint64(nil, 12345)); err != nil {
			return err
		}
		if err := meta.Put(tree.KeyTree, binary.BigEndian.AppendUint64(nil, 0)); err != nil {
			return err
		}
		check(tx)
		return errRollback
	})
	if !errors.Is(err, errRollback) {
		t.Fatal(err)
	}
}
