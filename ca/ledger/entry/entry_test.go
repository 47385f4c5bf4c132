package entry_test

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/verifier"
)

// FuzzDecodeEntry feeds arbitrary bytes (as an exported or hand-edited
// entry would be) to Decode and the tree verifier: neither may panic,
// and an entry that decodes must re-encode to an entry that decodes the same.
func FuzzDecodeEntry(f *testing.F) {
	notAfter := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	ev := entry.Event{
		Kind: entry.KindIssuance, Time: time.Date(2029, 1, 1, 0, 0, 0, 0, time.UTC), Serial: "1001",
		SPIFFEID: "spiffe://td/ns/a/sa/b", Node: "n", NotBefore: notAfter.Add(-time.Hour), NotAfter: notAfter,
		PublicKeySHA256: fmt.Sprintf("%064x", 1), CertDER: []byte("cert-1"),
	}
	good, _ := entry.Encode(7, &ev)
	f.Add(good)
	f.Add([]byte(`{"v":1,"index":0,"kind":"revocation","time":"x"}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		v := verifier.NewTree()
		v.Add(verifier.Leaf{Index: 0, Data: data, Hash: make([]byte, 32)})
		_ = v.Finish()
		e, err := entry.Decode(data)
		if err != nil {
			return
		}
		// The indexer's and follower's decoding: the same, without the
		// certificate.
		noCert, err := entry.DecodeEvent(data)
		want := e
		want.CertDER = nil
		if err != nil || !reflect.DeepEqual(noCert, want) {
			t.Fatalf("decodeEvent = %+v, %v; want DecodeEntry's %+v without the certificate", noCert, err, want)
		}
		again, err := entry.Encode(e.Index, &e.Event)
		if err != nil {
			t.Fatal(err)
		}
		// An append's index summary is cut from its encoding.
		if sum, err := entry.EncodeSummary(e.Index, &e.Event); err != nil || !bytes.Equal(entry.SummaryOf(again), sum) {
			t.Fatalf("summaryOf(%s) = %s, encodeSummary = %s (%v)", again, entry.SummaryOf(again), sum, err)
		}
		e2, err := entry.Decode(again)
		if err != nil {
			t.Fatalf("re-encoded entry does not decode: %v", err)
		}
		if e2.Index != e.Index || e2.Kind != e.Kind || e2.Serial != e.Serial || !bytes.Equal(e2.CertDER, e.CertDER) ||
			!e2.Time.Equal(e.Time) || !e2.NotAfter.Equal(e.NotAfter) {
			t.Fatalf("round trip changed the entry: %+v vs %+v", e.Event, e2.Event)
		}
	})
}

// TestValidate: every rule an appended event must meet is enforced by
// Validate, and a valid event of each kind passes.
func TestValidate(t *testing.T) {
	for name, tc := range map[string]struct {
		ev entry.Event
		ok bool
	}{
		"issuance":             {entry.Event{Kind: entry.KindIssuance, Serial: "ab", SPIFFEID: "spiffe://td/x"}, true},
		"renewal with parent":  {entry.Event{Kind: entry.KindRenewal, Serial: "ab", SPIFFEID: "spiffe://td/x", Parent: "cd"}, true},
		"revocation":           {entry.Event{Kind: entry.KindRevocation, Serial: "ab"}, true},
		"ban":                  {entry.Event{Kind: entry.KindBan, Node: "n"}, true},
		"join-token use":       {entry.Event{Kind: entry.KindJoinTokenUse}, true},
		"unknown kind":         {entry.Event{Kind: "bogus"}, false},
		"issuance no serial":   {entry.Event{Kind: entry.KindIssuance, SPIFFEID: "spiffe://td/x"}, false},
		"issuance no ID":       {entry.Event{Kind: entry.KindIssuance, Serial: "ab"}, false},
		"revocation no serial": {entry.Event{Kind: entry.KindRevocation}, false},
		"unban no node":        {entry.Event{Kind: entry.KindUnban}, false},
		"upper-case serial":    {entry.Event{Kind: entry.KindIssuance, Serial: "AB", SPIFFEID: "spiffe://td/x"}, false},
		"non-hex parent":       {entry.Event{Kind: entry.KindRenewal, Serial: "ab", SPIFFEID: "spiffe://td/x", Parent: "zz"}, false},
		"parent on revocation": {entry.Event{Kind: entry.KindRevocation, Serial: "ab", Parent: "cd"}, false},
	} {
		err := tc.ev.Validate()
		if tc.ok && err != nil || !tc.ok && !errors.Is(err, entry.ErrInvalidEvent) {
			t.Errorf("%s: Validate = %v, want ok=%v (else ErrInvalidEvent)", name, err, tc.ok)
		}
	}
}

// TestNormalizeSerial: a serial is stored in one form; anything that is
// not a serial is ErrInvalidArgument.
func TestNormalizeSerial(t *testing.T) {
	if s, err := entry.NormalizeSerial("00AB"); err != nil || s != "ab" {
		t.Fatalf("NormalizeSerial(00AB) = %q, %v; want ab", s, err)
	}
	for _, bad := range []string{"", "xyz", "-1"} {
		if _, err := entry.NormalizeSerial(bad); !errors.Is(err, entry.ErrInvalidArgument) {
			t.Errorf("NormalizeSerial(%q) = %v, want ErrInvalidArgument", bad, err)
		}
	}
}
