// Package authz decides which SVIDs a node agent may obtain. Its rule, in
// one sentence: an agent may obtain an SVID only for a SPIFFE ID that a
// registration entry assigns to the agent's own node (Authorize, in
// authorize.go). Registration entries live in bbolt (Entries).
package authz

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/ca/authn"
	"github.com/castellan-dev/castellan/ca/lifetime"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

var entryBucket = []byte("entries")

// Limits on an entry's contents.
const (
	maxSelectors     = 32
	maxSelectorBytes = 512
)

// ErrNotFound is returned for an entry ID that does not exist.
var ErrNotFound = errors.New("authz: entry not found")

// Entries stores registration entries in bbolt and keeps an in-memory index
// of them by node for authorization. Every write is durable before it
// returns and then visible to Lookup. Entries is safe for concurrent use.
type Entries struct {
	db     *bbolt.DB
	td     spiffeid.TrustDomain
	maxTTL time.Duration
	clock  func() time.Time

	mu      sync.RWMutex
	byID    map[string]*cav1.Entry
	byNode  map[string][]*cav1.Entry
	changed chan struct{} // closed and replaced on every change
}

// NewEntries opens the entry store in db for trust domain td. maxTTL bounds
// an entry's TTL (0: no bound). clock nil means time.Now. An entry stored
// before the unix selector rule (unix.go) that the rule would refuse is
// loaded with AllowAnyUser set, so that listings and agents flag it.
func NewEntries(db *bbolt.DB, td spiffeid.TrustDomain, maxTTL time.Duration, clock func() time.Time) (*Entries, error) {
	if clock == nil {
		clock = time.Now
	}
	e := &Entries{db: db, td: td, maxTTL: maxTTL, clock: clock,
		byID: map[string]*cav1.Entry{}, byNode: map[string][]*cav1.Entry{}, changed: make(chan struct{})}
	err := db.Update(func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(entryBucket)
		if err != nil {
			return err
		}
		return b.ForEach(func(k, v []byte) error {
			ent := &cav1.Entry{}
			if err := proto.Unmarshal(v, ent); err != nil {
				return fmt.Errorf("decode entry %s: %w", k, err)
			}
			// Stored before the unix selector rule: it is open to any
			// user, so say so in listings and to agents (not rewritten).
			ent.AllowAnyUser = ent.AllowAnyUser || anyUser(ent.Selectors)
			e.index(ent)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("authz: load entries: %w", err)
	}
	return e, nil
}

// Create validates ent, gives it an ID and creation time, stores it and
// returns the stored entry. Invalid entries give an error that says what to
// fix; an entry with the same SPIFFE ID, node and selectors as an existing
// one is refused as a duplicate.
func (e *Entries) Create(ctx context.Context, ent *cav1.Entry) (*cav1.Entry, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("authz: create entry: %w", err)
	}
	stored, err := e.normalize(ent)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, other := range e.byNode[stored.Node] {
		if other.SpiffeId == stored.SpiffeId && sameSelectors(other.Selectors, stored.Selectors) {
			return nil, &InvalidEntryError{Err: fmt.Errorf("an entry for %s on node %q with the same selectors exists (ID %s)",
				stored.SpiffeId, stored.Node, other.Id)}
		}
	}
	val, err := proto.Marshal(stored)
	if err != nil {
		return nil, fmt.Errorf("authz: encode entry: %w", err)
	}
	err = e.db.Update(func(tx *bbolt.Tx) error {
		return tx.Bucket(entryBucket).Put([]byte(stored.Id), val)
	})
	if err != nil {
		return nil, fmt.Errorf("authz: store entry: %w", err)
	}
	e.index(stored)
	e.notifyLocked()
	return proto.CloneOf(stored), nil
}

// normalize validates ent and returns the copy to store.
func (e *Entries) normalize(ent *cav1.Entry) (*cav1.Entry, error) {
	if ent == nil {
		return nil, &InvalidEntryError{Err: errors.New("entry is missing")}
	}
	id, err := spiffeid.FromString(ent.GetSpiffeId())
	if err != nil {
		return nil, &InvalidEntryError{Err: fmt.Errorf("SPIFFE ID %q is invalid: %w", ent.GetSpiffeId(), err)}
	}
	switch {
	case !id.MemberOf(e.td):
		return nil, &InvalidEntryError{Err: fmt.Errorf("SPIFFE ID %q is not in trust domain %q", id, e.td)}
	case id.Path() == "":
		return nil, &InvalidEntryError{Err: fmt.Errorf("SPIFFE ID %q has no path", id)}
	case strings.HasPrefix(id.Path(), "/castellan/"):
		return nil, &InvalidEntryError{Err: fmt.Errorf("SPIFFE ID %q is reserved for Castellan's own agents and server", id)}
	}
	if err := authn.ValidateNodeName(ent.GetNode()); err != nil {
		return nil, &InvalidEntryError{Err: err}
	}
	if err := validateSelectors(ent.GetSelectors()); err != nil {
		return nil, err
	}
	if err := checkUnixPolicy(ent); err != nil {
		return nil, err
	}
	if _, err := lifetime.Seconds(ent.GetTtlSeconds(), e.maxTTL); err != nil {
		return nil, &InvalidEntryError{Err: fmt.Errorf("TTL %ds is out of range; use 0 (the CA default) up to %s", ent.GetTtlSeconds(), e.maxTTL)}
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
		CreatedAt:    timestamppb.New(e.clock()),
		AllowAnyUser: ent.GetAllowAnyUser(),
	}, nil
}

func validateSelectors(sels []*cav1.Selector) error {
	if len(sels) == 0 {
		return &InvalidEntryError{Err: errors.New("entry has no selectors; add at least one, e.g. unix:uid:1000 or unix:path:/usr/bin/app")}
	}
	if len(sels) > maxSelectors {
		return &InvalidEntryError{Err: fmt.Errorf("entry has %d selectors; at most %d are allowed", len(sels), maxSelectors)}
	}
	for _, s := range sels {
		if s.GetType() == "" || s.GetValue() == "" || strings.Contains(s.GetType(), ":") {
			return &InvalidEntryError{Err: fmt.Errorf("selector %q:%q is invalid; want TYPE:KEY:VALUE such as unix:uid:1000", s.GetType(), s.GetValue())}
		}
		if len(s.GetType())+len(s.GetValue()) > maxSelectorBytes {
			return &InvalidEntryError{Err: fmt.Errorf("selector %s:%.32s... is longer than %d bytes", s.GetType(), s.GetValue(), maxSelectorBytes)}
		}
	}
	return nil
}

// Delete removes the entry with the given ID; ErrNotFound if there is none.
func (e *Entries) Delete(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("authz: delete entry: %w", err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	ent, ok := e.byID[id]
	if !ok {
		return fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	err := e.db.Update(func(tx *bbolt.Tx) error {
		return tx.Bucket(entryBucket).Delete([]byte(id))
	})
	if err != nil {
		return fmt.Errorf("authz: delete entry %s: %w", id, err)
	}
	delete(e.byID, id)
	e.byNode[ent.Node] = slices.DeleteFunc(slices.Clone(e.byNode[ent.Node]), func(x *cav1.Entry) bool { return x.Id == id })
	if len(e.byNode[ent.Node]) == 0 {
		delete(e.byNode, ent.Node)
	}
	e.notifyLocked()
	return nil
}

// List returns copies of the entries, all of them or those of one node,
// sorted by SPIFFE ID then ID.
func (e *Entries) List(node string) []*cav1.Entry {
	e.mu.RLock()
	var out []*cav1.Entry
	if node != "" {
		for _, ent := range e.byNode[node] {
			out = append(out, proto.CloneOf(ent))
		}
	} else {
		for _, ent := range e.byID {
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
// entries. Call it again after it fires for the change after that.
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
	fn(e.byNode[node])
}

// get returns the entry with the given ID (shared, read-only), or nil.
func (e *Entries) get(id string) *cav1.Entry {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.byID[id]
}

func (e *Entries) index(ent *cav1.Entry) {
	e.byID[ent.Id] = ent
	// Copy-on-write, so slices handed to lookup callers are never mutated.
	e.byNode[ent.Node] = append(slices.Clone(e.byNode[ent.Node]), ent)
}

func (e *Entries) notifyLocked() {
	close(e.changed)
	e.changed = make(chan struct{})
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
