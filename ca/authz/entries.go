// Package authz decides which SVIDs a node agent may obtain. Its rule, in
// one sentence: an agent may obtain an SVID only for a SPIFFE ID that a
// registration entry assigns to the agent's own node (Authorize, in
// authorize.go). Registration entries live in
// the CA's store (Entries, on the store.DB contract).
package authz

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/ca/authn"
	"github.com/castellan-dev/castellan/ca/lifetime"
	"github.com/castellan-dev/castellan/ca/refusal"
	"github.com/castellan-dev/castellan/ca/store"
	"github.com/castellan-dev/castellan/internal/clock"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Buckets of the registry keyspace used by Entries. entries maps an entry
// ID to the entry (protobuf); entries_meta holds the generation, a counter
// every write of the entries bucket increments in the same transaction, so
// that a replica can tell in one read whether its index is current. A file
// written before the generation existed has none: generation 0.
var (
	entryBucket   = []byte("entries")
	entryMeta     = []byte("entries_meta")
	generationKey = []byte("generation")
)

// Limits on an entry's contents.
const (
	maxSelectors     = 32
	maxSelectorBytes = 512
)

// refreshRetry is how soon a follower retries a reload that failed (the
// store was unreachable): the next change signal may never come.
const refreshRetry = time.Second

// ErrNotFound is returned for an entry ID that does not exist.
var ErrNotFound = errors.New("authz: entry not found")

// Entries stores registration entries in a store.DB (the registry
// keyspace) and keeps an in-memory index of them by node for
// authorization. Every write is durable before it returns and then visible
// to Lookup. When the store is shared by several replicas (DB.Shared),
// Entries follows the other replicas' writes: it reloads its index when
// the store signals a change (within about a second) and then fires its
// own Changed, so that every replica's SyncAgent streams see an entry
// created through any replica. Writes are checked against the state of
// the store in the writing transaction, not against the index, so two
// replicas cannot create the same entry twice. Entries is safe for
// concurrent use; Close stops the follower.
type Entries struct {
	db     store.DB
	td     spiffeid.TrustDomain
	maxTTL time.Duration
	clock  clock.Clock
	log    *slog.Logger

	// writeMu serializes this process's writes: only a writer holding it
	// modifies the installed index in place (under mu); the follower only
	// replaces it.
	writeMu sync.Mutex

	mu      sync.RWMutex
	idx     *index        // readers hold mu (read) while they use it
	changed chan struct{} // closed and replaced on every change

	stop    context.CancelFunc
	stopped chan struct{} // closed when the follower exits
}

// EntriesConfig holds the settings of Entries; its zero value is the
// default.
type EntriesConfig struct {
	// MaxTTL bounds an entry's TTL (0: no bound).
	MaxTTL time.Duration
	// Clock dates new entries (nil: the wall clock).
	Clock clock.Clock
	// Logger receives the follower's failures to reload (nil: discard).
	Logger *slog.Logger
}

// NewEntries loads the entries of db for trust domain td (ctx bounds the
// load) and, when db is shared, starts following other replicas' writes
// until Close. An entry stored before the unix selector rule (unix.go) that
// the rule would refuse is loaded with AllowAnyUser set, so that listings
// and agents flag it.
func NewEntries(ctx context.Context, db store.DB, td spiffeid.TrustDomain, cfg EntriesConfig) (*Entries, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	e := &Entries{db: db, td: td, maxTTL: cfg.MaxTTL, clock: clock.OrSystem(cfg.Clock), log: cfg.Logger,
		changed: make(chan struct{}), stopped: make(chan struct{})}
	// Subscribe before loading, so that a write committed by another
	// replica while we load is not missed.
	ch := db.Changed()
	err := db.Update(ctx, func(tx store.Tx) error {
		for _, name := range [][]byte{entryBucket, entryMeta} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		err = e.refresh(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("authz: load entries: %w", err)
	}
	fctx, cancel := context.WithCancel(context.Background())
	e.stop = cancel
	if db.Shared() {
		go e.follow(fctx, ch)
	} else {
		close(e.stopped)
	}
	return e, nil
}

// Close stops following the store (the store itself is the caller's to
// close). The entries already loaded stay readable.
func (e *Entries) Close() error {
	e.stop()
	<-e.stopped
	return nil
}

// follow reloads the index after every change of the store until ctx
// ends; a failed reload is retried after refreshRetry. The first failure
// of a run is logged as a warning, the recovery as info.
func (e *Entries) follow(ctx context.Context, ch <-chan struct{}) {
	defer close(e.stopped)
	var retry <-chan time.Time
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-ch:
		case <-retry:
		}
		ch, retry = e.db.Changed(), nil
		err := e.refresh(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			retry = time.After(refreshRetry)
			if !failing {
				e.log.Warn("registration entries: reload from the store failed; agents may see stale entries until it succeeds (retrying every second)",
					"error", err.Error())
			}
			failing = true
		case failing:
			e.log.Info("registration entries: reloaded from the store again")
			failing = false
		}
	}
}

// refresh brings the index up to the store's generation.
func (e *Entries) refresh(ctx context.Context) error {
	var next *index
	err := e.db.View(ctx, func(tx store.Tx) error {
		var err error
		next, err = e.indexAt(tx)
		return err
	})
	if err != nil {
		return err
	}
	e.install(next)
	return nil
}

// indexAt returns the index of the entries in tx: the installed one when
// it is at the store's generation, else one loaded from tx (not installed:
// the transaction may yet fail). A writer (holding writeMu) may read the
// installed index without mu: nobody else modifies it.
func (e *Entries) indexAt(tx store.Tx) (*index, error) {
	gen := generation(tx)
	e.mu.RLock()
	idx := e.idx
	e.mu.RUnlock()
	if idx != nil && idx.gen == gen {
		return idx, nil
	}
	return loadIndex(tx, gen)
}

// install makes idx the index if it is newer than the installed one, and
// fires Changed if that changed the entries.
func (e *Entries) install(idx *index) {
	e.mu.Lock()
	defer e.mu.Unlock()
	old := e.idx
	if old != nil && idx.gen <= old.gen {
		return
	}
	e.idx = idx
	if old != nil && !sameIDs(old, idx) {
		e.notifyLocked()
	}
}

// commit applies a write committed at generation gen, decided on base (the
// installed index or one loaded in the write's transaction, at gen-1).
// Called with writeMu held.
func (e *Entries) commit(base *index, gen uint64, apply func(*index)) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.idx != base && e.idx.gen >= gen {
		return // the follower installed a newer index, with this write
	}
	apply(base) // in place: readers hold mu
	base.gen = gen
	e.idx = base
	e.notifyLocked()
}

func (e *Entries) notifyLocked() {
	close(e.changed)
	e.changed = make(chan struct{})
}

// Create validates ent, gives it an ID and creation time, stores it and
// returns the stored entry. Invalid entries give an error that says what to
// fix; an entry with the same SPIFFE ID, node and selectors as an existing
// one is refused as a duplicate. A store failure gives an error wrapping
// store.ErrUnavailable.
func (e *Entries) Create(ctx context.Context, ent *cav1.Entry) (*cav1.Entry, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("authz: create entry: %w", err)
	}
	stored, err := e.normalize(ent)
	if err != nil {
		return nil, err
	}
	val, err := proto.Marshal(stored)
	if err != nil {
		return nil, fmt.Errorf("authz: encode entry: %w", err)
	}
	e.writeMu.Lock()
	defer e.writeMu.Unlock()
	var base *index
	err = e.db.Update(ctx, func(tx store.Tx) error {
		cur, err := e.indexAt(tx)
		if err != nil {
			return err
		}
		for _, other := range cur.byNode[stored.Node] {
			if other.SpiffeId == stored.SpiffeId && sameSelectors(other.Selectors, stored.Selectors) {
				return invalidEntry(fmt.Errorf("an entry for %s on node %q with the same selectors exists (ID %s)",
					stored.SpiffeId, stored.Node, other.Id))
			}
		}
		b, err := bucketOf(tx, entryBucket)
		if err != nil {
			return err
		}
		if err := b.Put([]byte(stored.Id), val); err != nil {
			return err
		}
		base = cur
		return setGeneration(tx, cur.gen+1)
	})
	if err != nil {
		return nil, writeError("store entry", err)
	}
	e.commit(base, base.gen+1, func(idx *index) { idx.add(stored) })
	return proto.CloneOf(stored), nil
}

// normalize validates ent and returns the copy to store.
func (e *Entries) normalize(ent *cav1.Entry) (*cav1.Entry, error) {
	if ent == nil {
		return nil, invalidEntry(errors.New("entry is missing"))
	}
	id, err := spiffeid.FromString(ent.GetSpiffeId())
	if err != nil {
		return nil, invalidEntry(fmt.Errorf("SPIFFE ID %q is invalid: %w", ent.GetSpiffeId(), err))
	}
	switch {
	case !id.MemberOf(e.td):
		return nil, invalidEntry(fmt.Errorf("SPIFFE ID %q is not in trust domain %q", id, e.td))
	case id.Path() == "":
		return nil, invalidEntry(fmt.Errorf("SPIFFE ID %q has no path", id))
	case strings.HasPrefix(id.Path(), "/castellan/"):
		return nil, invalidEntry(fmt.Errorf("SPIFFE ID %q is reserved for Castellan's own agents and server", id))
	}
	if err := authn.ValidateNodeName(ent.GetNode()); err != nil {
		return nil, invalidEntry(err)
	}
	if err := validateSelectors(ent.GetSelectors()); err != nil {
		return nil, err
	}
	if err := checkUnixPolicy(ent); err != nil {
		return nil, err
	}
	if _, err := lifetime.Seconds(ent.GetTtlSeconds(), e.maxTTL); err != nil {
		return nil, invalidEntry(fmt.Errorf("TTL %ds is out of range; use 0 (the CA default) up to %s", ent.GetTtlSeconds(), e.maxTTL))
	}
	raw := make([]byte, 16)
	if _, err := rand.Read(raw); err != nil {
		return nil, fmt.Errorf("authz: entry ID: %w", err)
	}
	sels := make([]*cav1.Selector, 0, len(ent.GetSelectors()))
	for _, s := range ent.GetSelectors() {
		sels = append(sels, &cav1.Selector{Type: s.GetType(), Value: s.GetValue()})
	}
	slices.SortFunc(sels, compareSelectors)
	sels = slices.CompactFunc(sels, func(a, b *cav1.Selector) bool { return compareSelectors(a, b) == 0 })
	return &cav1.Entry{
		Id:           hex.EncodeToString(raw),
		SpiffeId:     id.String(),
		Node:         ent.GetNode(),
		Selectors:    sels,
		TtlSeconds:   ent.GetTtlSeconds(),
		CreatedAt:    timestamppb.New(e.clock.Now()),
		AllowAnyUser: ent.GetAllowAnyUser(),
	}, nil
}

func validateSelectors(sels []*cav1.Selector) error {
	if len(sels) == 0 {
		return invalidEntry(errors.New("entry has no selectors; add at least one, e.g. unix:uid:1000 or unix:path:/usr/bin/app"))
	}
	if len(sels) > maxSelectors {
		return invalidEntry(fmt.Errorf("entry has %d selectors; at most %d are allowed", len(sels), maxSelectors))
	}
	for _, s := range sels {
		if s.GetType() == "" || s.GetValue() == "" || strings.Contains(s.GetType(), ":") {
			return invalidEntry(fmt.Errorf("selector %q:%q is invalid; want TYPE:KEY:VALUE such as unix:uid:1000", s.GetType(), s.GetValue()))
		}
		if len(s.GetType())+len(s.GetValue()) > maxSelectorBytes {
			return invalidEntry(fmt.Errorf("selector %s:%.32s... is longer than %d bytes", s.GetType(), s.GetValue(), maxSelectorBytes))
		}
	}
	return nil
}

// Delete removes the entry with the given ID; ErrNotFound if there is none.
// A store failure gives an error wrapping store.ErrUnavailable.
func (e *Entries) Delete(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("authz: delete entry: %w", err)
	}
	e.writeMu.Lock()
	defer e.writeMu.Unlock()
	var base *index
	err := e.db.Update(ctx, func(tx store.Tx) error {
		cur, err := e.indexAt(tx)
		if err != nil {
			return err
		}
		if cur.byID[id] == nil {
			return fmt.Errorf("%w: %q", ErrNotFound, id)
		}
		b, err := bucketOf(tx, entryBucket)
		if err != nil {
			return err
		}
		if err := b.Delete([]byte(id)); err != nil {
			return err
		}
		base = cur
		return setGeneration(tx, cur.gen+1)
	})
	if err != nil {
		return writeError("delete entry "+id, err)
	}
	e.commit(base, base.gen+1, func(idx *index) { idx.remove(id) })
	return nil
}

// bucketOf returns the named bucket of tx (made by NewEntries).
func bucketOf(tx store.Tx, name []byte) (store.Bucket, error) {
	if b := tx.Bucket(name); b != nil {
		return b, nil
	}
	return nil, fmt.Errorf("authz: the store has no %s bucket", name)
}

// writeError wraps the error of a write. A store failure wins over what
// the transaction decided, which is dropped from the chain: a refusal
// ("not found", "duplicate") may rest on a read that failed.
func writeError(op string, err error) error {
	var ie *refusal.Error
	switch {
	case errors.Is(err, store.ErrCommitUnknown):
		return fmt.Errorf("authz: %s: %w; the write may or may not have been made, list the entries to see (%s)", op, store.ErrCommitUnknown, err.Error())
	case errors.Is(err, store.ErrUnavailable):
		return fmt.Errorf("authz: %s: %w; nothing was changed (%s)", op, store.ErrUnavailable, err.Error())
	case errors.As(err, &ie):
		return ie
	case errors.Is(err, ErrNotFound):
		return err
	}
	return fmt.Errorf("authz: %s: %w", op, err)
}

// List returns copies of the entries, all of them or those of one node,
// sorted by SPIFFE ID then ID.
func (e *Entries) List(node string) []*cav1.Entry {
	e.mu.RLock()
	var out []*cav1.Entry
	if node != "" {
		for _, ent := range e.idx.byNode[node] {
			out = append(out, proto.CloneOf(ent))
		}
	} else {
		for _, ent := range e.idx.byID {
			out = append(out, proto.CloneOf(ent))
		}
	}
	e.mu.RUnlock()
	slices.SortFunc(out, func(a, b *cav1.Entry) int {
		if c := strings.Compare(a.SpiffeId, b.SpiffeId); c != 0 {
			return c
		}
		return strings.Compare(a.Id, b.Id)
	})
	return out
}

// Changed returns a channel that is closed at the next change to the
// entries, made through this Entries or (shared store) another replica.
// Call it again after it fires for the change after that.
func (e *Entries) Changed() <-chan struct{} {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.changed
}

// lookup calls fn with the entries of node under the read lock; fn must
// not keep or modify them.
func (e *Entries) lookup(node string, fn func([]*cav1.Entry)) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	fn(e.idx.byNode[node])
}

// get returns the entry with the given ID (shared, read-only), or nil.
func (e *Entries) get(id string) *cav1.Entry {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.idx.byID[id]
}

func compareSelectors(a, b *cav1.Selector) int {
	if c := strings.Compare(a.GetType(), b.GetType()); c != 0 {
		return c
	}
	return strings.Compare(a.GetValue(), b.GetValue())
}

func sameSelectors(a, b []*cav1.Selector) bool {
	return slices.EqualFunc(a, b, func(x, y *cav1.Selector) bool { return compareSelectors(x, y) == 0 })
}

// ParseSelector parses TYPE:KEY:VALUE (or TYPE:VALUE) into a Selector whose
// Type is TYPE and Value the rest, e.g. "unix:path:/usr/bin/app" gives
// {Type: "unix", Value: "path:/usr/bin/app"}.
func ParseSelector(s string) (*cav1.Selector, error) {
	typ, val, ok := strings.Cut(s, ":")
	if !ok || typ == "" || val == "" {
		return nil, fmt.Errorf("authz: selector %q is invalid; want TYPE:KEY:VALUE such as unix:uid:1000", s)
	}
	return &cav1.Selector{Type: typ, Value: val}, nil
}
