package pgstore

import (
	"sync"

	"github.com/castellan-dev/castellan/ca/store/pgstore/pgtx"
)

// keyspace is the state a Conn keeps per keyspace, shared by its DBs: the
// newest version seen (own commits, notifications, polls), the Changed
// channel, and the buckets known to exist.
type keyspace struct {
	name string
	// writer admits one Update of this process at a time: the others
	// wait here rather than on the coordinator row holding a pooled
	// connection each, which would starve the Views.
	writer chan struct{}

	mu      sync.Mutex
	version int64
	changed chan struct{}
	refs    int // DBs using it

	buckets pgtx.KnownBuckets
}

func newKeyspace(name string, version int64) *keyspace {
	return &keyspace{name: name, version: version, writer: make(chan struct{}, 1), changed: make(chan struct{})}
}

// Changed returns the channel closed at the next change.
func (k *keyspace) Changed() <-chan struct{} {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.changed
}

// advance records that version v was committed, firing Changed if it is
// news.
func (k *keyspace) advance(v int64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if v > k.version {
		k.version = v
		k.fireLocked()
	}
}

// fire signals Changed (an Update of this process that wrote nothing).
func (k *keyspace) fire() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.fireLocked()
}

func (k *keyspace) fireLocked() {
	close(k.changed)
	k.changed = make(chan struct{})
}
