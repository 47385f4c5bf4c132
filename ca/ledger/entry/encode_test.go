package entry

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// marshalEntry is the reference leaf encoding: json.Marshal of the wire
// struct, what Encode wrote before it was written by hand.
func marshalEntry(index uint64, ev *Event) ([]byte, error) {
	w := wireEntry{
		V: wireVersion, Index: index, Kind: ev.Kind, Time: FormatTime(ev.Time),
		Serial: ev.Serial, SPIFFEID: ev.SPIFFEID, Node: ev.Node,
		NotBefore: FormatTime(ev.NotBefore), NotAfter: FormatTime(ev.NotAfter),
		PublicKeySHA256: ev.PublicKeySHA256, Reason: ev.Reason, Parent: ev.Parent,
	}
	if len(ev.CertDER) > 0 {
		w.Cert = base64.StdEncoding.EncodeToString(ev.CertDER)
	}
	return json.Marshal(&w)
}

// awkward are strings encoding/json escapes or treats specially: quotes,
// backslashes, control characters (with and without short escapes), the
// HTML characters, DEL, multi-byte UTF-8, U+2028/U+2029, invalid UTF-8.
var awkward = []string{
	"", "plain", `q"uote`, `back\slash`, "nl\n", "tab\t", "bs\b ff\f cr\r", "nul\x00", "\x1f",
	"<script>&amp;</script>", "del\x7f", "é ü 日本", "ls\u2028ps\u2029", "bad\xff\xfe", "\xc3",
	"spiffe://td/ns/a/sa/b", "0123456789abcdef",
}

// TestEncodeMatchesMarshal checks Encode against json.Marshal of the wire
// struct, byte for byte: every kind, awkward strings in every string
// field, zero and non-UTC times (with and without nanoseconds, years
// outside 0-9999), with and without a certificate, and an appended-to
// buffer.
func TestEncodeMatchesMarshal(t *testing.T) {
	times := []time.Time{{}, time.Date(2029, 1, 2, 3, 4, 5, 0, time.UTC),
		time.Date(2029, 1, 2, 3, 4, 5, 123456789, time.FixedZone("x", 5*3600+1800)),
		time.Date(-3, 1, 1, 0, 0, 0, 10, time.UTC), time.Date(12345, 1, 1, 0, 0, 0, 0, time.UTC), time.Unix(0, 1)}
	kinds := []Kind{KindIssuance, KindRenewal, KindRevocation, KindCAKeyChange, KindJoinTokenUse, KindBan, KindUnban, "", `we"ird<`}
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func() string { return awkward[rng.IntN(len(awkward))] }
	for i := range 5000 {
		ev := Event{
			Kind: kinds[i%len(kinds)], Time: times[rng.IntN(len(times))], Serial: pick(), SPIFFEID: pick(), Node: pick(),
			NotBefore: times[rng.IntN(len(times))], NotAfter: times[rng.IntN(len(times))], PublicKeySHA256: pick(),
			Reason: pick(), Parent: pick(),
		}
		if i%3 != 0 {
			ev.CertDER = bytes.Repeat([]byte{byte(i), 0xfb, 0xff}, i%300+1)
		}
		checkEncode(t, uint64(rng.Uint64()>>(i%64)), &ev)
	}
}

// checkEncode fails t unless Encode and AppendEncoded (after a prefix, in
// a buffer with and without room) give marshalEntry's bytes.
func checkEncode(t *testing.T, index uint64, ev *Event) {
	t.Helper()
	want, err := marshalEntry(index, ev)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Encode(index, ev)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("Encode(%d, %+v) =\n%s (%v)\nwant\n%s", index, ev, got, err, want)
	}
	for _, prefix := range [][]byte{[]byte("pre"), make([]byte, 3, 4096)} {
		got, err := AppendEncoded(prefix, index, ev)
		if err != nil || !bytes.Equal(got[:3], prefix[:3]) || !bytes.Equal(got[3:], want) {
			t.Fatalf("AppendEncoded(%q, %d, %+v) = %q (%v), want the prefix then %s", prefix, index, ev, got, err, want)
		}
	}
}

// FuzzEncode holds the hand-written leaf encoding equal to json.Marshal
// of the wire struct for any strings, times and certificate. Run:
//
//	go test -run '^$' -fuzz FuzzEncode -fuzztime 60s ./ca/ledger/entry/
func FuzzEncode(f *testing.F) {
	for i, s := range awkward {
		f.Add(uint64(i), string(KindIssuance), s, "spiffe://td/x", "node-"+s, int64(1_700_000_000_000_000_000), int64(i), s, []byte(s), s, "ab")
	}
	f.Fuzz(func(t *testing.T, index uint64, kind, serial, spiffeID, node string, t1, t2 int64, pk string, cert []byte, reason, parent string) {
		ev := Event{
			Kind: Kind(kind), Time: time.Unix(0, t1), Serial: serial, SPIFFEID: spiffeID, Node: node,
			NotBefore: time.Unix(t2, t1%1e9), NotAfter: time.Unix(0, t2), PublicKeySHA256: pk, CertDER: cert,
			Reason: reason, Parent: parent,
		}
		if t2%7 == 0 {
			ev.Time = time.Time{}
		}
		if t2%5 == 0 {
			ev.NotAfter = time.Time{}
		}
		checkEncode(t, index, &ev)
	})
}

// BenchmarkEncode compares the hand-written leaf encoding with
// json.Marshal of the wire struct for an issuance event.
func BenchmarkEncode(b *testing.B) {
	ev := Event{
		Kind: KindIssuance, Time: time.Unix(1_700_000_000, 123), Serial: fmt.Sprintf("%x", 1<<60),
		SPIFFEID: "spiffe://cluster.local/ns/ns1/sa/sa2", Node: "node-17", NotBefore: time.Unix(1_700_000_000, 0),
		NotAfter: time.Unix(1_700_003_600, 0), PublicKeySHA256: fmt.Sprintf("%064x", 5), CertDER: make([]byte, 560),
	}
	b.Run("hand", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			if _, err := Encode(7, &ev); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("json", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			if _, err := marshalEntry(7, &ev); err != nil {
				b.Fatal(err)
			}
		}
	})
}
