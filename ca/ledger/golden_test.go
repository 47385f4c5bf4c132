package ledger

import (
	"context"
	"crypto/sha256"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/index"
	"github.com/castellan-dev/castellan/internal/clock/clocktest"
)

// goldenEvents are appends of every kind of event, in batches of several
// sizes, with strings encoding/json escapes: what TestStoredBytesUnchanged
// stores.
func goldenEvents() [][]entry.Event {
	at := time.Date(2026, 11, 29, 8, 0, 0, 123456789, time.UTC)
	var out [][]entry.Event
	n := 0
	for _, size := range []int{1, 2, 7, 30, 100, 3} {
		evs := make([]entry.Event, size)
		for i := range evs {
			n++
			ev := entry.Event{
				Kind: entry.KindIssuance, Time: at.Add(time.Duration(n) * time.Millisecond), Serial: fmt.Sprintf("%x", 0xabc000+n*7919%1000),
				SPIFFEID: fmt.Sprintf("spiffe://td/ns/n%d/sa/<s&a>%d", n%5, n%3), Node: fmt.Sprintf("node-%d", n%4),
				NotBefore: at, NotAfter: at.Add(time.Duration(n%3+1) * time.Hour), PublicKeySHA256: fmt.Sprintf("%064x", n),
				CertDER: []byte(fmt.Sprintf("cert-%d-\x00\xff", n)),
			}
			switch n % 9 {
			case 1:
				ev.Kind, ev.Parent = entry.KindRenewal, fmt.Sprintf("%x", 0xabc000+(n-1)*7919%1000)
			case 2:
				ev.SPIFFEID = fmt.Sprintf("spiffe://td/castellan/agent/node-%d", n%4)
			case 3:
				ev = entry.Event{Kind: entry.KindRevocation, Time: ev.Time, Serial: ev.Serial, SPIFFEID: ev.SPIFFEID, Node: ev.Node, NotAfter: ev.NotAfter, Reason: "key \"compromise\" é\u2028"}
			case 4:
				ev = entry.Event{Kind: entry.KindBan, Node: fmt.Sprintf("node-%d", n%4), Reason: "stolen <disk>"}
			case 5:
				ev = entry.Event{Kind: entry.KindUnban, Time: ev.Time, Node: fmt.Sprintf("node-%d", n%4), Reason: "back to R&D"}
			case 6:
				ev = entry.Event{Kind: entry.KindJoinTokenUse, Time: ev.Time, Node: "joined\tnode"}
			case 7:
				ev = entry.Event{Kind: entry.KindCAKeyChange, Time: ev.Time, Reason: "rotation", PublicKeySHA256: ev.PublicKeySHA256}
			}
			evs[i] = ev
		}
		out = append(out, evs)
	}
	return out
}

// goldenDump is the SHA-256 of every bucket's keys and values (but the
// log key's and the signed checkpoints, which differ per key) after
// goldenEvents, as the code before issue 16's ledger work stored them
// (db4a67b): the log's bytes, the tree and the indexes.
const goldenDump = "84720a13750226a12a1d1aa1f699262e59e3490ede967e8a129869e632c64aaf"

// TestStoredBytesUnchanged appends goldenEvents with a frozen clock and
// checks that the store holds exactly what the earlier code stored.
func TestStoredBytesUnchanged(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	clock := newFakeClock()
	l, err := Open(path, Config{Clock: clocktest.Func(clock.Now)})
	if err != nil {
		t.Fatal(err)
	}
	for _, evs := range goldenEvents() {
		if _, err := l.Append(context.Background(), evs...); err != nil {
			t.Fatal(err)
		}
	}
	if err := index.Wait(l.Index, context.Background()); err != nil { // the indexer's keys too
		t.Fatal(err)
	}
	h, n := sha256.New(), 0
	err = l.bolt.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			return b.ForEach(func(k, v []byte) error {
				switch string(name) + "/" + string(k) {
				case "meta/checkpoint", "meta/witnessed_checkpoint", "meta/verifier_key":
					return nil
				}
				n++
				fmt.Fprintf(h, "%q %q %q\n", name, k, v)
				return nil
			})
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	if got := fmt.Sprintf("%x", h.Sum(nil)); got != goldenDump || n < 400 {
		t.Fatalf("the store holds %d keys hashing to %s; the earlier code stored %s", n, got, goldenDump)
	}
}
