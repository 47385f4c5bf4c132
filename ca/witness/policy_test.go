package witness_test

import (
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/witness"
	"golang.org/x/mod/sumdb/note"
)

// TestParseKey: only well-formed Ed25519 cosignature/v1 keys whose key ID
// matches are accepted; other key types are refused by name.
func TestParseKey(t *testing.T) {
	c := newCosigner(t, "witness.test/w1")
	k, err := witness.ParseKey(c.vkey)
	if err != nil {
		t.Fatal(err)
	}
	if k.Name() != "witness.test/w1" || k.KeyHash() != c.id || k.String() != c.vkey {
		t.Fatalf("parsed %s %08x %s", k.Name(), k.KeyHash(), k)
	}
	name, rest, _ := strings.Cut(c.vkey, "+")
	id, b64, _ := strings.Cut(rest, "+")
	raw, _ := base64.StdEncoding.DecodeString(b64)
	retype := func(alg byte, key []byte) string {
		return name + "+" + id + "+" + base64.StdEncoding.EncodeToString(append([]byte{alg}, key...))
	}
	_, plainVKey, _ := note.GenerateKey(nil, "witness.test/w1")
	for _, tc := range []struct{ name, vkey, want string }{
		{"empty", "", "want <name>+<key id>+<base64 key>"},
		{"no key", name + "+" + id, "want <name>+<key id>+<base64 key>"},
		{"space in name", "a b+" + id + "+" + b64, "has spaces"},
		{"short id", name + "+abc+" + b64, "not 8 hex digits"},
		{"id not hex", name + "+zzzzzzzz+" + b64, "not 8 hex digits"},
		{"bad base64", name + "+" + id + "+!!!", "not standard base64"},
		{"wrong id", name + "+00000000+" + b64, "does not match the key"},
		{"other name", "witness.test/w2+" + id + "+" + b64, "does not match the key"},
		{"plain note key", plainVKey, "plain signed-note Ed25519 key (type 0x01)"},
		{"ml-dsa", retype(0x06, raw[1:]), "ML-DSA-44"},
		{"unknown type", retype(0x09, raw[1:]), "unknown key type 0x09"},
		{"short key", retype(0x04, raw[1:20]), "an Ed25519 key has 32 bytes, not 19"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := witness.ParseKey(tc.vkey)
			mustContain(t, err, tc.want)
		})
	}
}

// TestParseWitness: the flag form NAME=URL+VKEY, with '+' allowed in the
// URL and in the key, and errors that say what is wrong.
func TestParseWitness(t *testing.T) {
	c := newCosigner(t, "witness.test/w1")
	for _, url := range []string{"https://witness.example", "http://127.0.0.1:8080/a+b/", "https://w.example/c2sp+witness"} {
		w, err := witness.ParseWitness("w1=" + url + "+" + c.vkey)
		if err != nil {
			t.Fatalf("%s: %v", url, err)
		}
		if w.Name != "w1" || w.URL.String() != url || w.Key.String() != c.vkey {
			t.Fatalf("%s: parsed %q %q %q", url, w.Name, w.URL, w.Key)
		}
	}
	for _, tc := range []struct{ name, in, want string }{
		{"no name", "https://w.example+" + c.vkey, "want NAME=URL+VKEY"},
		{"ftp", "w1=ftp://w.example+" + c.vkey, "want an http:// or https:// URL"},
		{"relative", "w1=w.example+" + c.vkey, "want an http:// or https:// URL"},
		{"credentials", "w1=https://u:p@w.example+" + c.vkey, "carries credentials"},
		{"query", "w1=https://w.example/?a=b+" + c.vkey, "no query or fragment"},
		{"no key", "w1=https://w.example", "no verifier key after the URL"},
		{"bad key", "w1=https://w.example+witness.test/w1+00000000+AAAA", "witness.test/w1+00000000+AAAA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := witness.ParseWitness(tc.in)
			mustContain(t, err, tc.want)
			if strings.Contains(err.Error(), "u:p@") {
				t.Fatalf("error leaks the URL's credentials: %v", err)
			}
		})
	}
}

// TestParsePolicy: quorum bounds, duplicates, and 0 meaning all.
func TestParsePolicy(t *testing.T) {
	c1, c2 := newCosigner(t, "witness.test/w1"), newCosigner(t, "witness.test/w2")
	w1 := "w1=https://w1.example+" + c1.vkey
	w2 := "w2=https://w2.example+" + c2.vkey
	p, err := witness.ParsePolicy(0, []string{w1, w2})
	if err != nil {
		t.Fatal(err)
	}
	if p.Quorum() != 2 || len(p.Witnesses()) != 2 || p.String() != "2 of [w1 w2]" {
		t.Fatalf("policy %s, quorum %d", p, p.Quorum())
	}
	for _, tc := range []struct {
		name   string
		quorum int
		ws     []string
		want   string
	}{
		{"none", 1, nil, "no witnesses"},
		{"quorum too large", 3, []string{w1, w2}, "quorum 3 is not between 1 and the number of witnesses (2)"},
		{"negative quorum", -1, []string{w1}, "quorum -1"},
		{"same name", 1, []string{w1, "w1=https://w2.example+" + c2.vkey}, `two witnesses are named "w1"`},
		{"same URL", 1, []string{w1, "w2=https://w1.example/+" + c2.vkey}, "share the URL"},
		{"same key", 1, []string{w1, "w2=https://w2.example+" + c1.vkey}, "have the same key"},
		{"bad name", 1, []string{"w 1=https://w1.example+" + c1.vkey}, "use 1 to 64 letters"},
		{"bad witness", 1, []string{w1, "w2=https://w2.example"}, `witness "w2"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := witness.ParsePolicy(tc.quorum, tc.ws)
			mustContain(t, err, "witness policy", tc.want)
		})
	}
}

// TestParsePolicyYAML: the YAML form, strict about unknown fields.
func TestParsePolicyYAML(t *testing.T) {
	c1, c2 := newCosigner(t, "witness.test/w1"), newCosigner(t, "witness.test/w2")
	doc := fmt.Sprintf(`quorum: 1
witnesses:
  - name: w1
    url: https://w1.example/
    key: %s
  - name: w2
    url: http://127.0.0.1:7000
    key: %s
`, c1.vkey, c2.vkey)
	p, err := witness.ParsePolicyYAML([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if p.String() != "1 of [w1 w2]" {
		t.Fatalf("policy %s", p)
	}
	noQuorum, err := witness.ParsePolicyYAML([]byte(strings.SplitN(doc, "\n", 2)[1]))
	if err != nil || noQuorum.Quorum() != 2 {
		t.Fatalf("without quorum: %v %v; want all (2)", noQuorum, err)
	}
	for _, tc := range []struct{ name, doc, want string }{
		{"empty", "", "empty policy"},
		{"typo", strings.Replace(doc, "quorum:", "quorom:", 1), "field quorom not found"},
		{"unknown witness field", strings.Replace(doc, "    key:", "    kee:", 1), "field kee not found"},
		{"bad key", strings.Replace(doc, c2.vkey, "x+00000000+AAAA", 1), `witness 2 ("w2")`},
		{"bad url", strings.Replace(doc, "https://w1.example/", "w1.example", 1), `witness 1 ("w1")`},
		{"quorum too large", strings.Replace(doc, "quorum: 1", "quorum: 3", 1), "quorum 3"},
		{"not yaml", "[", "witness policy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := witness.ParsePolicyYAML([]byte(tc.doc))
			mustContain(t, err, tc.want)
		})
	}
}

// TestVerify: a checkpoint satisfies a policy only with the log's
// signature and a quorum of distinct, valid, not-future cosignatures.
func TestVerify(t *testing.T) {
	key := newLogKey(t, testOrigin)
	lg := newTestLog(t, key, "x").grow(10)
	cp := lg.checkpoint(t)
	text := noteText(t, cp)
	c1, c2, c3 := newCosigner(t, "w1.test/w"), newCosigner(t, "w2.test/w"), newCosigner(t, "w3.test/w")
	p := policy(t, 2, witnessSpec{"w1", "https://w1.test", c1}, witnessSpec{"w2", "https://w2.test", c2}, witnessSpec{"w3", "https://w3.test", c3})
	at := fakeNow.Add(-time.Minute)
	l1, l2, l3 := c1.line(text, at), c2.line(text, at), c3.line(text, at)
	stranger := newCosigner(t, "w9.test/w").line(text, at)
	fork := newTestLog(t, key, "fork").grow(10)

	v, err := p.Verify([]byte(string(cp)+l1+stranger+l3), testOrigin, lg.verifier, fakeNow)
	if err != nil {
		t.Fatal(err)
	}
	if v.Checkpoint.Size != 10 || len(v.Cosignatures) != 2 || v.Cosignatures[0].Witness != "w1" ||
		v.Cosignatures[1].Witness != "w3" || !v.Cosignatures[0].Time.Equal(at.Truncate(time.Second)) {
		t.Fatalf("verified %+v", v)
	}
	for _, tc := range []struct{ name, note, want string }{
		{"one cosignature", string(cp) + l1, "has 1 of the 2 witness cosignatures policy 2 of [w1 w2 w3] requires (missing: w2, w3)"},
		{"the same line twice", string(cp) + l1 + l1, "has 1 of the 2"},
		{"a stranger does not count", string(cp) + l1 + stranger, "has 1 of the 2"},
		{"cosignature over a fork", string(fork.checkpoint(t)) + l1 + l2, "does not verify over this checkpoint"},
		{"future cosignature", string(cp) + l1 + c2.line(text, fakeNow.Add(time.Hour)), "more than 5m0s after now"},
		{"no log signature", string(text) + "\n" + l1 + l2, "not signed by the log key"},
		{"not a note", "hello", "not a well-formed signed note"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := p.Verify([]byte(tc.note), testOrigin, lg.verifier, fakeNow)
			mustContain(t, err, tc.want)
		})
	}
	_, err = p.Verify([]byte(string(cp)+l1+l2), "castellan.test/other", lg.verifier, fakeNow)
	mustContain(t, err, `checkpoint is for log "castellan.test/ledger", not "castellan.test/other"`)
}
