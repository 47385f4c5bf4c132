// Package storetest is the conformance suite of the storage contract
// (package store). Every backend runs it from its own tests:
//
//	func TestConformance(t *testing.T) { storetest.Run(t, backend) }
//
// Each test states one promise of the contract's specification and would
// fail on a backend that broke it.
package storetest

import (
	"testing"

	"github.com/castellan-dev/castellan/ca/store"
)

// Backend opens databases for the suite.
type Backend struct {
	// Open returns a new, empty keyspace; the backend closes it at the
	// end of t.
	Open func(t *testing.T) store.DB
	// Reopen closes db and opens the same keyspace again, as a restarted
	// process would (durability).
	Reopen func(t *testing.T, db store.DB) store.DB
	// Replica, for shared backends (nil otherwise), opens another handle
	// on db's keyspace, as another replica of the CA would: its own
	// connections, its own change listener.
	Replica func(t *testing.T, db store.DB) store.DB
}

// Run runs the whole suite against b.
func Run(t *testing.T, b Backend) {
	t.Run("Buckets", func(t *testing.T) { testBuckets(t, b) })
	t.Run("PutGetDelete", func(t *testing.T) { testPutGetDelete(t, b) })
	t.Run("ReadOnlyView", func(t *testing.T) { testReadOnlyView(t, b) })
	t.Run("KeyOrder", func(t *testing.T) { testKeyOrder(t, b) })
	t.Run("CursorSeek", func(t *testing.T) { testCursorSeek(t, b) })
	t.Run("LongScan", func(t *testing.T) { testLongScan(t, b) })
	t.Run("ForEach", func(t *testing.T) { testForEach(t, b) })
	t.Run("ReadYourWrites", func(t *testing.T) { testReadYourWrites(t, b) })
	t.Run("FailedUpdateWritesNothing", func(t *testing.T) { testFailedUpdate(t, b) })
	t.Run("CanceledContext", func(t *testing.T) { testCanceled(t, b) })
	t.Run("Snapshot", func(t *testing.T) { testSnapshot(t, b) })
	t.Run("SerializedUpdates", func(t *testing.T) { testSerialized(t, b, false) })
	t.Run("LargeValues", func(t *testing.T) { testLargeValues(t, b) })
	t.Run("Changed", func(t *testing.T) { testChanged(t, b) })
	t.Run("Durable", func(t *testing.T) { testDurable(t, b) })
	t.Run("Ping", func(t *testing.T) { testPing(t, b) })
	if b.Replica == nil {
		return
	}
	t.Run("Replica/SeesCommits", func(t *testing.T) { testReplicaSees(t, b) })
	t.Run("Replica/ChangedWithinASecond", func(t *testing.T) { testReplicaChanged(t, b) })
	t.Run("Replica/SerializedUpdates", func(t *testing.T) { testSerialized(t, b, true) })
	t.Run("Replica/Shared", func(t *testing.T) { testShared(t, b) })
}
