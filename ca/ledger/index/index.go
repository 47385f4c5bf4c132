package index

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/tree"
	"github.com/castellan-dev/castellan/ca/store"
)

// The index buckets.
var (
	bSerial  = []byte("by_serial")
	bSPIFFE  = []byte("by_spiffe_id")
	bNode    = []byte("by_node")
	bExpiry  = []byte("by_expiry")
	bRevoked = []byte("revoked")
)

// Buckets returns the names of the index buckets a ledger creates with
// its log (the agents and parent buckets are created on first use).
func Buckets() [][]byte { return [][]byte{bSerial, bSPIFFE, bNode, bExpiry, bRevoked} }

// Secondary indexes. Each key is <value> 0x00 <index, 8 bytes big-endian>,
// so a prefix scan yields matching entries in log order; the expiry index
// key is <NotAfter unix nanoseconds> <index>. The SPIFFE ID index carries
// the entry's summary (the entry without its certificate) as value, so a
// List by SPIFFE ID reads one contiguous run of index pages instead of one
// random entry page per result.
type indexWriter struct {
	serial, spiffe, node, expiry, revoked store.Bucket
	parent                                store.Bucket // nil until a renewal with a parent was indexed
}

func newIndexWriter(tx store.Tx) *indexWriter {
	return &indexWriter{
		serial: tree.Bucket(tx, bSerial), spiffe: tree.Bucket(tx, bSPIFFE), node: tree.Bucket(tx, bNode),
		expiry: tree.Bucket(tx, bExpiry), revoked: tree.Bucket(tx, bRevoked), parent: tx.Bucket(ParentBucket),
	}
}

func indexKey(value string, idx uint64) []byte {
	k := make([]byte, 0, len(value)+9)
	k = append(k, value...)
	k = append(k, 0)
	return binary.BigEndian.AppendUint64(k, idx)
}

func expiryKey(notAfter time.Time, idx uint64) []byte {
	k := binary.BigEndian.AppendUint64(make([]byte, 0, 16), uint64(notAfter.UnixNano()))
	return binary.BigEndian.AppendUint64(k, idx)
}

// kv is one index key and value to put.
type kv struct{ k, v []byte }

// indexBatch collects the index puts of many entries, by bucket, so they
// can be prepared outside the write transaction and applied in key order,
// and the agent-record updates (records.go), applied in log order.
type indexBatch struct {
	kvs    map[string][]kv
	agents []agentUpdate
	arena  []byte // index keys end to end (key)
}

// key returns indexKey(value, idx), laid in the arena as a slice of its own.
func (b *indexBatch) key(value string, idx uint64) []byte {
	n := len(b.arena)
	b.arena = binary.BigEndian.AppendUint64(append(append(b.arena, value...), 0), idx)
	return b.arena[n:len(b.arena):len(b.arena)]
}

func (b *indexBatch) put(bucket []byte, k, v []byte) {
	if b.kvs == nil {
		b.kvs = map[string][]kv{}
	}
	b.kvs[string(bucket)] = append(b.kvs[string(bucket)], kv{k, v})
}

// newIndexBatch returns a batch sized for n certificates.
func newIndexBatch(n int) *indexBatch {
	batch := &indexBatch{kvs: make(map[string][]kv, 8), arena: make([]byte, 0, 128*n)}
	for _, name := range [][]byte{bSerial, bSPIFFE, bNode, bExpiry} { // each gets a key per certificate
		batch.kvs[string(name)] = make([]kv, 0, n)
	}
	return batch
}

// addCommitted collects the index entries of events in memory, evs[0] at
// index first, encoded[i] being evs[i] as stored.
func (b *indexBatch) addCommitted(first uint64, evs []entry.Event, encoded [][]byte) error {
	for i := range evs {
		ev := evs[i]
		// As DecodeEntry would return it: what the indexer writes for an
		// entry read back must be what is written here.
		ev.Time, ev.NotBefore, ev.NotAfter = ev.Time.UTC(), ev.NotBefore.UTC(), ev.NotAfter.UTC()
		if err := b.add(first+uint64(i), &ev, encoded[i]); err != nil {
			return err
		}
	}
	return nil
}

// add collects the index entries of event ev at idx. data is ev's entry
// as encodeEvent encoded it, or nil (the SPIFFE ID index's summary is then
// encoded afresh).
func (b *indexBatch) add(idx uint64, ev *entry.Event, data []byte) error {
	if ev.Parent != "" {
		b.put(ParentBucket, b.key(ev.Parent, idx), []byte(ev.Serial))
	}
	b.addAgent(idx, ev)
	if ev.Serial != "" {
		b.put(bSerial, b.key(ev.Serial, idx), nil)
	}
	if ev.SPIFFEID != "" {
		summary, err := []byte(nil), error(nil)
		if data != nil {
			summary = entry.SummaryOf(data)
		} else if summary, err = entry.EncodeSummary(idx, ev); err != nil {
			return err
		}
		b.put(bSPIFFE, b.key(ev.SPIFFEID, idx), summary)
	}
	if ev.Node != "" {
		b.put(bNode, b.key(ev.Node, idx), nil)
	}
	if !ev.NotAfter.IsZero() {
		b.put(bExpiry, expiryKey(ev.NotAfter, idx), nil)
	}
	if ev.Kind == entry.KindRevocation {
		v, err := json.Marshal(Revoked{Index: idx, Time: ev.Time, Reason: ev.Reason, NotAfter: ev.NotAfter})
		if err != nil {
			return err
		}
		b.put(bRevoked, []byte(ev.Serial), v)
	}
	return nil
}

// apply writes the collected entries, each bucket in key order (buckets
// added after a file was created are created here).
func (b *indexBatch) apply(tx store.Tx) error {
	for name, kvs := range b.kvs {
		slices.SortStableFunc(kvs, func(a, b kv) int { return bytes.Compare(a.k, b.k) })
		bucket, err := tx.CreateBucketIfNotExists([]byte(name))
		if err != nil {
			return err
		}
		for _, p := range kvs {
			if err := bucket.Put(p.k, p.v); err != nil {
				return err
			}
		}
	}
	return b.applyAgents(tx)
}

func (w *indexWriter) remove(idx uint64, ev *entry.Event) error {
	for _, p := range []struct {
		b store.Bucket
		v string
	}{{w.serial, ev.Serial}, {w.spiffe, ev.SPIFFEID}, {w.node, ev.Node}} {
		if p.v == "" {
			continue
		}
		if err := p.b.Delete(indexKey(p.v, idx)); err != nil {
			return err
		}
	}
	if ev.Kind == entry.KindRevocation {
		if err := w.revoked.Delete([]byte(ev.Serial)); err != nil {
			return err
		}
	}
	if ev.Parent != "" && w.parent != nil {
		if err := w.parent.Delete(indexKey(ev.Parent, idx)); err != nil {
			return err
		}
	}
	if ev.NotAfter.IsZero() {
		return nil
	}
	return w.expiry.Delete(expiryKey(ev.NotAfter, idx))
}

// WriteTx writes the index entries of evs (evs[0] at index first, the
// index position; encoded[i] is evs[i]'s entry) and moves the stored index
// position past them.
func WriteTx(tx store.Tx, first uint64, evs []entry.Event, encoded [][]byte) error {
	batch := newIndexBatch(len(evs))
	if err := batch.addCommitted(first, evs, encoded); err != nil {
		return err
	}
	if err := batch.apply(tx); err != nil {
		return fmt.Errorf("ledger: index: %w", err)
	}
	return tree.Bucket(tx, tree.Meta).Put(tree.KeyIndexed, tree.Key(first+uint64(len(evs))))
}

// LookupSerial returns the log indices of events for serial, in order.
func LookupSerial(tx store.Tx, serial string) []uint64 {
	var out []uint64
	prefix := append([]byte(serial), 0)
	c := tree.Bucket(tx, bSerial).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && len(k) == len(prefix)+8; k, _ = c.Next() {
		out = append(out, tree.IndexOf(k))
	}
	return out
}

// Revoked is a revocation as kept in the revoked bucket and in memory.
type Revoked struct {
	Index    uint64    `json:"index"`
	Time     time.Time `json:"time"`
	Reason   string    `json:"reason,omitempty"`
	NotAfter time.Time `json:"not_after"`
}

// ForEachRevoked calls fn with every revocation in the revoked bucket.
func ForEachRevoked(tx store.Tx, fn func(serial string, r Revoked) error) error {
	return tree.Bucket(tx, bRevoked).ForEach(func(k, v []byte) error {
		var r Revoked
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("ledger: revocation of %s is damaged: %w", k, err)
		}
		return fn(string(k), r)
	})
}
