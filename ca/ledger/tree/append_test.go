package tree

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/store"
	"github.com/castellan-dev/castellan/ca/store/boltstore"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
)

// referenceAppend is the append as it was written before AppendEntries:
// each entry json.Marshal'ed from its wire form, hashed by
// rfc6962.DefaultHasher, its node record copied out of a reused buffer.
func referenceAppend(t *testing.T, tx store.Tx, r *compact.Range, evs []entry.Event) {
	entries, nodes := Bucket(tx, Entries), Bucket(tx, Nodes)
	for i := range evs {
		idx, ev := r.End(), &evs[i]
		data := wireOrder(t, idx, ev)
		if err := entries.Put(Key(idx), data); err != nil {
			t.Fatal(err)
		}
		var rec []byte
		err := r.Append(rfc6962.DefaultHasher.HashLeaf(data), func(_ compact.NodeID, h []byte) { rec = append(rec, h...) })
		if err != nil {
			t.Fatal(err)
		}
		if err := nodes.Put(Key(idx), rec); err != nil {
			t.Fatal(err)
		}
	}
}

// wireOrder marshals ev at idx through encoding/json in the leaf's
// field order (a struct with the wire tags).
func wireOrder(t *testing.T, idx uint64, ev *entry.Event) []byte {
	w := struct {
		V               int    `json:"v"`
		Index           uint64 `json:"index"`
		Kind            string `json:"kind"`
		Time            string `json:"time"`
		Serial          string `json:"serial,omitempty"`
		SPIFFEID        string `json:"spiffe_id,omitempty"`
		Node            string `json:"node,omitempty"`
		NotBefore       string `json:"not_before,omitempty"`
		NotAfter        string `json:"not_after,omitempty"`
		PublicKeySHA256 string `json:"public_key_sha256,omitempty"`
		Cert            string `json:"cert,omitempty"`
		Reason          string `json:"reason,omitempty"`
		Parent          string `json:"parent,omitempty"`
	}{1, idx, string(ev.Kind), entry.FormatTime(ev.Time), ev.Serial, ev.SPIFFEID, ev.Node,
		entry.FormatTime(ev.NotBefore), entry.FormatTime(ev.NotAfter), ev.PublicKeySHA256,
		base64.StdEncoding.EncodeToString(ev.CertDER), ev.Reason, ev.Parent}
	b, err := json.Marshal(&w)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestAppendEntriesMatchesReference appends the same events in batches
// of 1 to 40 (some with strings whose escaping outgrows the buffer
// AppendEntries sizes) to two stores, through AppendEntries and through the
// reference append, and checks that both hold the same entries and node
// records byte for byte and the same tree head.
func TestAppendEntriesMatchesReference(t *testing.T) {
	dbs := [2]*boltstore.DB{}
	for i := range dbs {
		db, err := boltstore.Open(filepath.Join(t.TempDir(), fmt.Sprintf("%d.db", i)))
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		dbs[i] = db
	}
	n := 0
	for batch := 1; batch <= 40; batch += 3 {
		evs := make([]entry.Event, batch)
		for i := range evs {
			n++
			evs[i] = entry.Event{Kind: entry.KindIssuance, Time: time.Unix(int64(n), int64(n)), Serial: fmt.Sprintf("%x", n),
				SPIFFEID: fmt.Sprintf("spiffe://td/w%d<&>", n%7), Node: "n\u2028", NotAfter: time.Unix(int64(n)+3600, 0),
				CertDER: bytes.Repeat([]byte{byte(n)}, n%50), Reason: "r\"", Parent: ""}
			if n%5 == 0 { // escaped to six times its length: outgrows the buffer AppendEntries sized
				evs[i].Reason = strings.Repeat("<", 300+n)
			}
		}
		appendWith(t, dbs[0], func(tx store.Tx, r *compact.Range, h *Hasher) {
			if _, err := AppendEntries(tx, r, h, evs); err != nil {
				t.Fatal(err)
			}
		})
		appendWith(t, dbs[1], func(tx store.Tx, r *compact.Range, _ *Hasher) { referenceAppend(t, tx, r, evs) })
	}
	a, b := dump(t, dbs[0]), dump(t, dbs[1])
	if a != b || len(a) < 1000 {
		t.Fatalf("AppendEntries stored\n%.2000s\nthe reference stored\n%.2000s", a, b)
	}
}

// appendWith runs fn in an update of db on the stored head's range and
// stores the head it leaves.
func appendWith(t *testing.T, db *boltstore.DB, fn func(store.Tx, *compact.Range, *Hasher)) {
	err := db.Update(context.Background(), func(tx store.Tx) error {
		for _, name := range [][]byte{Meta, Entries, Nodes} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		st, err := Read(tx)
		if err != nil {
			return err
		}
		h := NewHasher(2)
		r, err := st.RangeWith(h)
		if err != nil {
			return err
		}
		fn(tx, r, h)
		return Write(tx, r)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// dump returns every key and value of db's log buckets.
func dump(t *testing.T, db *boltstore.DB) string {
	var out bytes.Buffer
	err := db.View(context.Background(), func(tx store.Tx) error {
		for _, name := range [][]byte{Meta, Entries, Nodes} {
			err := Bucket(tx, name).ForEach(func(k, v []byte) error {
				fmt.Fprintf(&out, "%s %x %s\n", name, k, v)
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out.String()
}
