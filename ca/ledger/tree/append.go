package tree

import (
	"encoding/binary"

	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/store"
	"github.com/transparency-dev/merkle/compact"
)

// AppendEntries encodes evs at the end of r (evs[0] at r.End()), puts
// each entry in the entries bucket and its node record (nodes bucket),
// and appends its leaf to r, whose new nodes h hashes. It returns the
// encoded entries. The encodings share one buffer, and the keys and node
// records another each, carved into slices no later write touches: the
// store may keep a value until the transaction ends.
func AppendEntries(tx store.Tx, r *compact.Range, h *Hasher, evs []entry.Event) ([][]byte, error) {
	entries := Bucket(tx, Entries)
	store.MarkSequential(entries)
	nw := NewNodeWriter(tx, len(evs))
	size := 0
	for i := range evs {
		size += entry.SizeHint(&evs[i])
	}
	buf := make([]byte, 0, size)
	keys := make([]byte, 0, 8*len(evs))
	encoded := make([][]byte, len(evs))
	for i := range evs {
		idx := r.End()
		start := len(buf)
		var err error
		if buf, err = entry.AppendEncoded(buf, idx, &evs[i]); err != nil {
			return nil, err
		}
		data := buf[start:len(buf):len(buf)]
		encoded[i] = data
		keys = binary.BigEndian.AppendUint64(keys, idx)
		key := keys[len(keys)-8 : len(keys) : len(keys)]
		if err := entries.Put(key, data); err != nil {
			return nil, err
		}
		if err := r.Append(h.Leaf(data), nw.Visit); err != nil {
			return nil, err
		}
		if err := nw.flush(key); err != nil {
			return nil, err
		}
	}
	return encoded, nil
}
