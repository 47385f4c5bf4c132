package authz

import (
	"encoding/binary"
	"fmt"
	"maps"
	"slices"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/ca/store"
	"google.golang.org/protobuf/proto"
)

// index is an immutable snapshot of the registration entries at one
// generation of the store: by ID, and by node for authorization. A write
// makes a new index (with, without); readers keep the one they got.
type index struct {
	gen    uint64
	loaded bool // false only for the placeholder before the first load
	byID   map[string]*cav1.Entry
	byNode map[string][]*cav1.Entry
}

func emptyIndex() *index {
	return &index{byID: map[string]*cav1.Entry{}, byNode: map[string][]*cav1.Entry{}}
}

// loadIndex reads every entry in tx, which is at generation gen.
func loadIndex(tx store.Tx, gen uint64) (*index, error) {
	idx := emptyIndex()
	idx.gen, idx.loaded = gen, true
	b := tx.Bucket(entryBucket)
	if b == nil {
		return idx, nil
	}
	err := b.ForEach(func(k, v []byte) error {
		ent := &cav1.Entry{}
		if err := proto.Unmarshal(v, ent); err != nil {
			return fmt.Errorf("decode entry %s: %w", k, err)
		}
		// Stored before the unix selector rule: it is open to any user,
		// so say so in listings and to agents (not rewritten).
		ent.AllowAnyUser = ent.AllowAnyUser || anyUser(ent.Selectors)
		idx.byID[ent.Id] = ent
		idx.byNode[ent.Node] = append(idx.byNode[ent.Node], ent)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return idx, nil
}

// with returns a copy of idx at the next generation with ent added.
func (idx *index) with(ent *cav1.Entry) *index {
	next := idx.next()
	next.byID[ent.Id] = ent
	// A new slice: the old index's slices are never mutated.
	next.byNode[ent.Node] = append(slices.Clone(idx.byNode[ent.Node]), ent)
	return next
}

// without returns a copy of idx at the next generation without entry id.
func (idx *index) without(id string) *index {
	next := idx.next()
	ent := idx.byID[id]
	if ent == nil {
		return next
	}
	delete(next.byID, id)
	rest := slices.DeleteFunc(slices.Clone(idx.byNode[ent.Node]), func(x *cav1.Entry) bool { return x.Id == id })
	if len(rest) == 0 {
		delete(next.byNode, ent.Node)
	} else {
		next.byNode[ent.Node] = rest
	}
	return next
}

// next copies the maps (not the entries, which are never modified).
func (idx *index) next() *index {
	n := &index{gen: idx.gen + 1, loaded: true,
		byID: make(map[string]*cav1.Entry, len(idx.byID)+1), byNode: make(map[string][]*cav1.Entry, len(idx.byNode)+1)}
	maps.Copy(n.byID, idx.byID)
	maps.Copy(n.byNode, idx.byNode)
	return n
}

// sameIDs reports whether a and b hold the same entries (entries are never
// modified, only created and deleted, so their IDs tell).
func sameIDs(a, b *index) bool {
	if len(a.byID) != len(b.byID) {
		return false
	}
	for id := range a.byID {
		if b.byID[id] == nil {
			return false
		}
	}
	return true
}

// generation returns the entries' generation in tx (0 if none is stored).
func generation(tx store.Tx) uint64 {
	b := tx.Bucket(entryMeta)
	if b == nil {
		return 0
	}
	v := b.Get(generationKey)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

// setGeneration stores gen in tx.
func setGeneration(tx store.Tx, gen uint64) error {
	b, err := tx.CreateBucketIfNotExists(entryMeta)
	if err != nil {
		return err
	}
	return b.Put(generationKey, binary.BigEndian.AppendUint64(nil, gen))
}
