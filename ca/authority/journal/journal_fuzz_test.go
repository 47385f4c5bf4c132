package journal

import (
	"encoding/json"
	"testing"

	"github.com/castellan-dev/castellan/ca/store"
)

// FuzzJournalRecord feeds damaged journal records to the decoder: it never
// panics, and a record it accepts is whole (a chain, roots, an ID that
// names its signing certificate, a known state and source).
func FuzzJournalRecord(f *testing.F) {
	e := newJournalEnv(f)
	a, err := Open(ctx, e.cfg)
	if err != nil {
		f.Fatal(err)
	}
	if _, err := a.Prepare(ctx, true); err != nil {
		f.Fatal(err)
	}
	err = e.db.View(ctx, func(tx store.Tx) error {
		return tx.Bucket(BucketAuthorities).ForEach(func(_, v []byte) error {
			f.Add(append([]byte(nil), v...))
			return nil
		})
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte(`{"id":"x","state":"active","source":"managed","chain":[],"roots":[]}`))
	f.Fuzz(func(t *testing.T, v []byte) {
		r, err := DecodeRecord(v)
		if err != nil {
			return
		}
		if len(r.Certs) == 0 || len(r.RootCerts) == 0 || AuthorityID(r.Certs[0]) != r.ID || !r.State.Trusted() && r.State != StateRevoked {
			t.Fatalf("accepted an incomplete record: %+v", r)
		}
		if _, err := json.Marshal(r); err != nil {
			t.Fatal(err)
		}
	})
}
