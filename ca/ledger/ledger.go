// Package ledger is Castellan's issuance ledger: an append-only Merkle-tree
// log of every issuance, renewal, revocation, CA key change, join-token use
// and node ban. It is also the durable store of node bans and of
// certificate lineages (packages agents, lineage).
//
// Leaves are RFC 6962 leaf hashes of each entry's encoded form; the tree
// state is published as signed checkpoints in the transparency-log
// checkpoint format (golang.org/x/mod/sumdb/note signatures), so an auditor
// holding an old checkpoint can check that the log only grew (Consistency)
// and anyone can check that an entry is in it (InclusionProof). Entries are
// indexed by serial, SPIFFE ID, node and expiry (package index): by the
// indexer a moment after they are appended, or on a shared store in the
// append's transaction (appendTx says why).
//
// Storage: the ledger is written against the storage contract (package
// store), once. Open keeps it in a bbolt file (boltstore) checked page by
// page, for one replica; New takes any store.DB, such as a PostgreSQL
// keyspace (pgstore) shared by every replica of the CA. Replicas sharing a
// store append to one log: the store serializes their transactions, each
// append reads the tree head it extends from the store, and each replica
// follows the others' appends (package follow), so its revocations, bans,
// Watch and checkpoints cover the whole log.
//
// Durability: Append returns only after its transaction is committed and
// durable (bbolt: fsync'd); concurrent Appends share one transaction
// (group commit, package commit). A store that cannot be reached fails Append
// with an error wrapping store.ErrUnavailable (Status: Unavailable), so no
// certificate is issued unlogged. A Ledger is safe for concurrent use.
//
// Its parts, each a package under ca/ledger: entry (events, entries, their
// encoding, the shared errors), tree (the stored Merkle tree, proofs,
// tiles), commit (group commit), follow (the log as published: Watch,
// Export, other replicas' appends), index (the certificate index: Entry,
// Get, List), revocation, agents (agents and bans), lineage, checkpoint
// (signed and witnessed checkpoints), logkey (the log key), logfile (the
// bbolt file, VerifyFile) and reserve (the disk reserve). The Ledger
// embeds the parts whose methods it offers and wires them together.
package ledger

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/castellan-dev/castellan/internal/clock"

	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/mod/sumdb/note"

	"github.com/castellan-dev/castellan/ca/ledger/agents"
	"github.com/castellan-dev/castellan/ca/ledger/checkpoint"
	"github.com/castellan-dev/castellan/ca/ledger/commit"
	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/follow"
	"github.com/castellan-dev/castellan/ca/ledger/index"
	"github.com/castellan-dev/castellan/ca/ledger/lineage"
	"github.com/castellan-dev/castellan/ca/ledger/logfile"
	"github.com/castellan-dev/castellan/ca/ledger/logkey"
	"github.com/castellan-dev/castellan/ca/ledger/reserve"
	"github.com/castellan-dev/castellan/ca/ledger/revocation"
	"github.com/castellan-dev/castellan/ca/ledger/tree"
	"github.com/castellan-dev/castellan/ca/store"
	"github.com/castellan-dev/castellan/ca/store/boltstore"
)

// DefaultRetention is applied by Open and New to a zero Config.Retention.
const DefaultRetention = 30 * 24 * time.Hour

// Config configures a Ledger; its zero value is the defaults.
type Config struct {
	// Clock tells the time (nil: the wall clock).
	Clock clock.Clock
	// Origin names the log in its checkpoints (first line) and is the name
	// of the generated log key ("" -> logkey.DefaultOrigin).
	Origin string
	// Signer signs checkpoints; VerifierKey is its note verifier key
	// ("<name>+<hash>+<key>"), given to auditors. Both set or neither: when
	// neither is set, the Ed25519 log key is read from KeyFile.
	Signer      note.Signer
	VerifierKey string
	// KeyFile is the file holding the log's note signer key (mode 0600).
	// Open defaults it to path+".key" and generates the key there for a
	// new ledger. New requires it (or Signer) and never generates a key:
	// replicas sharing a store must share one key (GenerateKeyFile makes
	// it; castellanctl ledger keygen).
	KeyFile string
	// Logger receives one JSON audit line per event, and operational logs
	// (nil -> discard).
	Logger *slog.Logger
	// Registry, when set, receives the ledger's metrics.
	Registry *prometheus.Registry
	// Retention is how long after NotAfter an entry's full content is
	// kept before Prune may remove it (0 -> 30 days).
	Retention time.Duration
	// DiskReserve is the free space (bytes) the ledger leaves on its
	// filesystem: below it Append fails with reserve.ErrDiskReserve (0: no
	// reserve). Only for Open's bbolt file; New ignores it (a database
	// server watches its own disk).
	DiskReserve uint64
	// FreeSpace returns the bytes available on the ledger's filesystem
	// (nil: statfs of the ledger file's directory). For tests; Open only.
	FreeSpace func() (uint64, error)
	// OnRevoke, when set, is called with the node and SPIFFE ID of each
	// revoked certificate once its revocation is durable, before agents
	// are told (the CA refills the identity's issuance quota with it).
	OnRevoke func(node, spiffeID string)
	// ReadOnly (Open only) opens the file read-only for forensics, even if it is
	// damaged: a damaged file is not read by bbolt but salvaged (every
	// entry on a sound page is copied into a temporary file, removed by
	// Close; the damage is logged) and the copy is served. Entries on
	// damaged pages read as missing; Append, Revoke and Prune fail with
	// ErrReadOnly; the tree is not checked at open (ledger verify does).
	ReadOnly bool
}

// Ledger is an open issuance log.
type Ledger struct {
	*follow.Published       // the log as published: Size, Watch, Export
	*index.Index            // the certificate index: Entry, Get, List
	*revocation.Set         // the revocations: Revoke, IsRevoked, Revocations, ...
	*agents.Registry        // agents and bans: Agents, Ban, Banned, ...
	*checkpoint.Checkpoints // signed checkpoints: Checkpoint, WitnessedCheckpoint, ...
	*lineage.Lineages       // lineages: Ancestors, Descendants, RevokeWithDescendants, ...

	db        store.DB
	bolt      *bolt.DB // the file under db when opened with Open; nil with New
	ownsDB    bool     // Close closes db (Open)
	shared    bool     // db.Shared(): other replicas append too (package follow)
	clock     clock.Clock
	origin    string
	vkey      string
	log       *slog.Logger
	audit     *slog.Logger // log with the audit attribute (append.go, auditLine)
	retention time.Duration
	metrics   *metrics
	readOnly  bool
	onRevoke  func(node, spiffeID string)
	reserve   *reserve.Reserve
	cleanup   func()                             // removes a salvaged copy (forensic mode)
	commit    *commit.Committer[follow.Appended] // writes Appends (package commit); nil when read-only

	// ctx is the ledger's lifetime, cancelled by Close: the context of
	// the committer's transactions, of the background goroutines and of
	// the calls that take none.
	ctx    context.Context
	cancel context.CancelFunc

	revokeMu sync.Mutex // serializes every write that revokes (Revoke, bans, lineages)

	mu     sync.Mutex
	closed bool

	stop chan struct{}  // closed by Close
	bg   sync.WaitGroup // the indexer and the follower
}

// Buckets returns the names of the buckets a ledger keeps, in the order a
// copy to another store (store.Copy: castellanctl's migration from bbolt
// to PostgreSQL) must write them: meta, which marks a store as holding a
// ledger, last. A copy keeps every leaf hash, so proofs from checkpoints
// saved before the copy still verify; open it with the same log key.
func Buckets() [][]byte {
	out := append([][]byte{tree.Entries, tree.Nodes}, index.Buckets()...)
	return append(out, index.AgentsBucket, index.ParentBucket, tree.Meta)
}

// Open opens (creating if needed) the ledger at path, a bbolt file with
// mode 0600. It checks the file's integrity before using it: every page's
// structure (a damaged page is ErrDamaged naming the file and the page,
// never a bbolt panic), bbolt's own consistency check, and the Merkle tree
// recomputed from the stored entries against the stored tree head and
// signed checkpoint; and that the file belongs to the same origin and log
// key. With Config.ReadOnly only the meta pages must be sound. The log
// key is read from Config.KeyFile (default path+".key"), generated there
// for a new ledger. Close closes the file.
func Open(path string, opts Config) (*Ledger, error) {
	if opts.KeyFile == "" && opts.Signer == nil {
		opts.KeyFile = path + ".key"
	}
	if opts.Signer == nil {
		if err := logkey.CheckPresent(path, opts.KeyFile); err != nil {
			return nil, err
		}
	}
	l := newLedger(opts, false)
	if err := l.loadKey(opts, true); err != nil {
		return nil, err
	}
	if err := l.openFile(path); err != nil {
		return nil, err
	}
	if !l.readOnly {
		l.reserve = reserve.New(path, reserve.Config{Reserve: opts.DiskReserve, FreeSpace: opts.FreeSpace, Clock: l.clock, Logger: l.log})
	}
	l.start(opts)
	return l, nil
}

// New opens the ledger stored in db, any backend of the storage contract
// (boltstore, pgstore), creating its buckets if needed. The log key must
// be given (Config.KeyFile, or Signer and VerifierKey): New never
// generates one, so that replicas sharing db cannot each make their own.
// The key must be the one the log was created with (its verifier key is
// kept in the store). New checks the stored checkpoint's signature but
// does not recompute the tree (ledger verify does). When db.Shared(),
// entries appended by other replicas are followed (package follow). The
// ledger does not own db: Close leaves it open. Config.ReadOnly,
// DiskReserve and FreeSpace apply only to Open's bbolt file.
func New(db store.DB, opts Config) (*Ledger, error) {
	if opts.ReadOnly {
		return nil, errors.New("ledger: Config.ReadOnly is forensic mode for a bbolt file; use Open")
	}
	if opts.KeyFile == "" && opts.Signer == nil {
		return nil, fmt.Errorf("ledger: the log key is required: set Config.KeyFile to the signer key file (%s)", logkey.KeygenHint)
	}
	l := newLedger(opts, db.Shared())
	l.db = db
	if err := l.loadKey(opts, false); err != nil {
		return nil, err
	}
	err := l.init()
	if err == nil {
		err = l.checkCheckpoint()
	}
	if err == nil {
		err = l.catchUp()
	}
	if err != nil {
		l.cancel()
		return nil, err
	}
	l.start(opts)
	return l, nil
}

// newLedger returns a Ledger with opts' settings and defaults, not yet
// attached to a store (shared: one that other replicas append to).
func newLedger(opts Config, shared bool) *Ledger {
	l := &Ledger{
		clock: opts.Clock, origin: opts.Origin, log: opts.Logger,
		retention: opts.Retention,
		stop:      make(chan struct{}), readOnly: opts.ReadOnly, onRevoke: opts.OnRevoke, shared: shared,
	}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.clock = clock.OrSystem(l.clock)
	if l.origin == "" {
		l.origin = logkey.DefaultOrigin
	}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	l.audit = l.log.With(slog.String("audit", "castellan.ledger"))
	l.Published = follow.New(follow.Config{
		View: l.view, Read: func(ctx context.Context, fn func(store.Tx) error) error { return index.Read(l.Index, ctx, fn) },
		Changed: func() <-chan struct{} { return l.db.Changed() }, Ctx: l.ctx, Log: l.log, Shared: shared, Closed: l.isClosed,
		Apply:   l.applyEvents,
		Indexed: func(n uint64) { index.Advance(l.Index, n) }, Backlog: func() { index.Kick(l.Index) },
		Stored: func(cp []byte) { checkpoint.Note(l.Checkpoints, cp) },
	})
	l.Index = index.New(index.Config{
		View: l.view, Update: l.txUpdate,
		Ctx: l.ctx, Log: l.log, Clock: l.clock, ReadOnly: l.readOnly,
		Shared: l.shared, Published: l.Size, Closed: l.isClosed,
	})
	l.Set = revocation.New(l.Index, l.Append, &l.revokeMu, l.readOnly)
	rv := revocation.Revoker{Index: l.Index, Revocations: l.Set, Append: l.Append, Mu: &l.revokeMu, Clock: l.clock}
	l.Registry, l.Lineages = agents.New(rv), lineage.New(rv)
	if l.retention == 0 {
		l.retention = DefaultRetention
	}
	return l
}

// start registers the metrics and, unless read-only, starts the
// committer, the indexer and (on a shared store) the follower.
func (l *Ledger) start(opts Config) {
	l.metrics = newMetrics(opts.Registry, l)
	if l.readOnly {
		return // nothing is written: no committer, no indexer
	}
	l.commit = commit.New(l.update, l.appendTx, l.publish)
	go l.commit.Run()
	l.bg.Add(1)
	go func() {
		defer l.bg.Done()
		index.Run(l.Index, l.stop)
	}()
	if l.shared {
		l.bg.Add(1)
		go func() {
			defer l.bg.Done()
			follow.Run(l.Published, l.stop)
		}()
	}
}

// openFile opens and checks the bbolt file, loads its state and, unless
// read-only, brings the indexes up to date.
func (l *Ledger) openFile(path string) error {
	var err error
	if l.readOnly {
		l.bolt, l.cleanup, err = logfile.OpenForensic(path, l.log)
	} else {
		l.bolt, err = logfile.OpenChecked(path)
	}
	if err != nil {
		l.cancel()
		return err
	}
	l.db, l.ownsDB = boltstore.New(l.bolt), true
	if !l.readOnly {
		err = l.checkExisting(path) // before init writes to the file
	}
	if err == nil {
		err = l.init()
	}
	if err == nil {
		err = l.catchUp()
	}
	if err == nil && l.readOnly {
		l.warnUnindexed()
	}
	if err != nil {
		l.cancel()
		l.db.Close()
		if l.cleanup != nil {
			l.cleanup()
		}
		return err
	}
	return nil
}

// warnUnindexed tells the forensic reader which entries the indexer had
// not reached (Get and List read the file's indexes as they are).
func (l *Ledger) warnUnindexed() {
	if indexed, size := index.Position(l.Index), l.Size(); indexed < size {
		l.log.Warn("the last entries of the ledger are not in its indexes: Get and List do not show them; ledger export and verify do",
			"unindexed_entries", size-indexed, "first_unindexed", indexed)
	}
}

// init creates the buckets, records the origin and verifier key of a new
// log and loads the tree head.
func (l *Ledger) init() error {
	if l.readOnly {
		return l.view(l.ctx, l.load)
	}
	return l.db.Update(l.ctx, func(tx store.Tx) error {
		for _, name := range append([][]byte{tree.Meta, tree.Entries, tree.Nodes}, index.Buckets()...) {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("ledger: create bucket %s: %w", name, err)
			}
		}
		meta := tree.Bucket(tx, tree.Meta)
		for _, kv := range []struct{ k, v []byte }{{tree.KeyOrigin, []byte(l.origin)}, {tree.KeyVerifierKey, []byte(l.vkey)}} {
			if meta.Get(kv.k) != nil {
				continue
			}
			if err := meta.Put(kv.k, kv.v); err != nil {
				return fmt.Errorf("ledger: %w", err)
			}
		}
		return l.load(tx)
	})
}

// load checks the store's origin and log key and loads the tree head,
// the latest checkpoint and the index position.
func (l *Ledger) load(tx store.Tx) error {
	meta := tx.Bucket(tree.Meta)
	if meta == nil || tx.Bucket(tree.Entries) == nil || tx.Bucket(tree.Nodes) == nil {
		return errors.New("ledger: the store holds no ledger (its buckets are missing)")
	}
	if o := meta.Get(tree.KeyOrigin); string(o) != l.origin {
		return fmt.Errorf("ledger: the store belongs to log %q, not %q", o, l.origin)
	}
	if err := logkey.Check(meta.Get(tree.KeyVerifierKey), l.vkey); err != nil {
		return err
	}
	st, err := tree.Read(tx)
	if err != nil {
		return err
	}
	follow.SetHead(l.Published, st)
	if cp := meta.Get(tree.KeyCheckpoint); cp != nil {
		checkpoint.Note(l.Checkpoints, append([]byte(nil), cp...))
	}
	index.Advance(l.Index, index.Stored(tx))
	return nil
}

// Origin returns the log's origin line.
func (l *Ledger) Origin() string { return l.origin }

// VerifierKey returns the note verifier key for the log's checkpoints.
func (l *Ledger) VerifierKey() string { return l.vkey }

// Close stops the ledger. Appends already queued are committed first;
// later ones fail with ErrClosed. It closes the bbolt file of Open, not
// the store given to New.
func (l *Ledger) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	if l.commit != nil {
		l.commit.Close()
	}
	if !l.readOnly { // what was appended since the indexer's last pass
		if err := index.CatchUp(l.Index); err != nil {
			l.log.Warn("ledger: the indexes were not brought up to date at close; the next Open does it", "error", err)
		}
	}
	close(l.stop)
	l.cancel()
	l.bg.Wait()
	index.Wake(l.Index) // wakes waiting queries, which then see closed
	follow.Wake(l.Published)
	var err error
	if l.ownsDB {
		err = l.db.Close()
	}
	if l.cleanup != nil {
		l.cleanup()
	}
	if err != nil {
		return fmt.Errorf("ledger: close: %w", err)
	}
	return nil
}

// publish makes a committed append visible (the committer's publish),
// handing the indexer the events it is to index.
func (l *Ledger) publish(a follow.Appended, evs []entry.Event) {
	if a.Encoded != nil {
		index.Committed(l.Index, a.First, evs, a.Encoded)
	}
	follow.Publish(l.Published, a, evs)
}

// applyEvents applies committed events (evs[0] at index first) to the
// revocations and bans in force; Config.OnRevoke hears of each
// revocation first (the CA refills the identity's quota).
func (l *Ledger) applyEvents(first uint64, evs []entry.Event) {
	for i := range evs {
		if evs[i].Kind == entry.KindRevocation && l.onRevoke != nil {
			l.onRevoke(evs[i].Node, evs[i].SPIFFEID)
		}
	}
	revocation.Apply(l.Set, first, evs)
	agents.Apply(l.Registry, first, evs)
}

// update runs fn in a read-write transaction of the store with the
// ledger's lifetime as context (the committer's transactions: one caller
// giving up must not abort a transaction shared with others).
func (l *Ledger) update(fn func(store.Tx) error) error { return l.db.Update(l.ctx, fn) }

// loadKey sets the log key from opts (create: generate it in
// opts.KeyFile if absent) and the checkpoints it signs.
func (l *Ledger) loadKey(opts Config, create bool) error {
	k, err := logkey.Load(opts.Signer, opts.VerifierKey, opts.KeyFile, l.origin, create)
	if err != nil {
		return err
	}
	l.vkey = k.VKey
	l.Checkpoints = checkpoint.New(checkpoint.Config{
		Origin: l.origin, Signer: k.Signer, Verifier: k.Verifier, View: l.view, Update: l.txUpdate,
		Ctx: l.ctx, Log: l.log, ReadOnly: l.readOnly, Shared: l.shared, Published: l.Size, Closed: l.isClosed,
	})
	return nil
}

// txUpdate runs fn in a read-write transaction of the store.
func (l *Ledger) txUpdate(ctx context.Context, fn func(store.Tx) error) error {
	return l.db.Update(ctx, fn)
}

// Ping checks that the ledger's store can be reached (readiness: a CA
// whose ledger cannot be written must not be sent issuance).
func (l *Ledger) Ping(ctx context.Context) error {
	if l.isClosed() {
		return entry.ErrClosed
	}
	if err := l.db.Ping(ctx); err != nil {
		return fmt.Errorf("ledger: %w", err)
	}
	return nil
}
