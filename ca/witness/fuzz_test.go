package witness_test

import (
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/witness"
)

// FuzzVerify feeds arbitrary notes to Policy.Verify: it must never panic,
// and whatever it accepts has a quorum of cosignatures by distinct policy
// witnesses, none later than the clock's skew allows.
func FuzzVerify(f *testing.F) {
	key := newLogKey(f, testOrigin)
	lg := newTestLog(f, key, "x").grow(7)
	cp := lg.checkpoint(f)
	text := noteText(f, cp)
	c1, c2 := newCosigner(f, "w1.test/w"), newCosigner(f, "w2.test/w")
	p := policy(f, 2, witnessSpec{"w1", "https://w1.test", c1}, witnessSpec{"w2", "https://w2.test", c2})
	at := fakeNow.Add(-time.Minute)
	f.Add(append(append([]byte(nil), cp...), c1.line(text, at)+c2.line(text, at)...))
	f.Add(append(append([]byte(nil), cp...), c1.line(text, at)...))
	f.Add([]byte("castellan.test/ledger\n7\nAAAA\n\n— w1.test/w AAAAAAAA\n"))
	f.Fuzz(func(t *testing.T, signed []byte) {
		v, err := p.Verify(signed, testOrigin, lg.verifier, fakeNow)
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, c := range v.Cosignatures {
			if seen[c.Witness] || c.Time.After(fakeNow.Add(witness.ClockSkew)) {
				t.Fatalf("accepted %+v", v)
			}
			seen[c.Witness] = true
		}
		if len(seen) < p.Quorum() || v.Checkpoint.Origin != testOrigin {
			t.Fatalf("accepted %+v without a quorum", v)
		}
	})
}

// FuzzParseWitness: the flag parser never panics, and what it accepts
// prints back to a form it parses to the same witness.
func FuzzParseWitness(f *testing.F) {
	c := newCosigner(f, "witness.test/w1")
	f.Add("w1=https://witness.example/+" + c.vkey)
	f.Add("w1=http://127.0.0.1:1/a+b+" + c.vkey)
	f.Add("w1=https://x+y+00000000+AAAA")
	f.Fuzz(func(t *testing.T, s string) {
		w, err := witness.ParseWitness(s)
		if err != nil {
			return
		}
		again, err := witness.ParseWitness(w.Name + "=" + w.URL.String() + "+" + w.Key.String())
		if err != nil || again.Name != w.Name || again.URL.String() != w.URL.String() || again.Key.String() != w.Key.String() {
			t.Fatalf("%q parsed to %q %q %q, which reparses to %v", s, w.Name, w.URL, w.Key, err)
		}
	})
}
