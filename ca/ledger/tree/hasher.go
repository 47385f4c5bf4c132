package tree

import (
	"crypto/sha256"
	"hash"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
)

// Hasher computes the RFC 6962 hashes of one append (leaves, and the
// inner nodes its compact range completes) with one SHA-256 state, each
// hash in its own 32 bytes of a shared arena: the range keeps the hashes
// it is given, so none is ever written twice. rfc6962.DefaultHasher
// allocates a state and a result per hash; TestHasherMatchesRFC6962 and
// FuzzHasher hold the two equal. Not safe for concurrent use.
type Hasher struct {
	d     hash.Hash
	arena []byte
	pre   [1]byte
}

// NewHasher returns a Hasher with room for the hashes of about leaves
// appended leaves (more are allocated as needed).
func NewHasher(leaves int) *Hasher {
	return &Hasher{d: sha256.New(), arena: make([]byte, 0, HashSize*(2*leaves+64))}
}

// Leaf returns the leaf hash of data: SHA-256(0x00 || data).
func (h *Hasher) Leaf(data []byte) []byte {
	return h.sum(rfc6962.RFC6962LeafHashPrefix, data, nil)
}

// Children returns the hash of the inner node over l and r:
// SHA-256(0x01 || l || r) (compact.HashFn).
func (h *Hasher) Children(l, r []byte) []byte {
	return h.sum(rfc6962.RFC6962NodeHashPrefix, l, r)
}

// sum returns SHA-256(prefix || a || b) in the next 32 bytes of the arena.
func (h *Hasher) sum(prefix byte, a, b []byte) []byte {
	h.d.Reset()
	h.pre[0] = prefix
	h.d.Write(h.pre[:])
	h.d.Write(a)
	h.d.Write(b)
	if cap(h.arena)-len(h.arena) < HashSize {
		h.arena = make([]byte, 0, max(cap(h.arena), 64*HashSize))
	}
	n := len(h.arena)
	h.arena = h.d.Sum(h.arena)
	return h.arena[n : n+HashSize : n+HashSize]
}

// RangeWith returns the head as a compact range whose new nodes are
// hashed by h, to append to.
func (s Head) RangeWith(h *Hasher) (*compact.Range, error) {
	f := &compact.RangeFactory{Hash: h.Children}
	return s.rangeOf(f)
}
