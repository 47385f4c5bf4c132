package authz

import (
	"encoding/binary"
	"fmt"
	"slices"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/ca/store"
	"google.golang.org/protobuf/proto"
)

// index is the registration entries at one generation of the store, by
// ID and by node for authorization. The installed index is modified in
// place by writes (add, remove) under Entries.mu; the slices of byNode are
// copied on write, so a slice handed to a reader is never modified.
type index struct {
	gen    uint64
	byID   map[string]*cav1.Entry
	byNode map[string][]*cav1.Entry
}

// loadIndex reads every entry in tx, which is at generation gen.
func loadIndex(tx store.Tx, gen uint64) (*index, error) {
	idx := &index{gen: gen, byID: map[string]*cav1.Entry{}, byNode: map[string][]*cav1.Entry{}}
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

// add adds ent.
func (idx *index) add(ent *cav1.Entry) {
	idx.byID[ent.Id] = ent
	idx.byNode[ent.Node] = append(slices.Clone(idx.byNode[ent.Node]), ent)
}

// remove removes the entry with the given ID, if there is one.
func (idx *index) remove(id string) {
	ent := idx.byID[id]
	if ent == nil {
		return
	}
	delete(idx.byID, id)
	rest := slices.DeleteFunc(slices.Clone(idx.byNode[ent.Node]), func(x *cav1.Entry) bool { return x.Id == id })
	if len(rest) == 0 {
		delete(idx.byNode, ent.Node)
	} else {
		idx.byNode[ent.Node] = rest
	}
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
