package monitor_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/tlog"
	"github.com/castellan-dev/castellan/ca/tlog/monitor"
	"github.com/castellan-dev/castellan/internal/witness"
	"golang.org/x/mod/sumdb/note"
)

// DecodeEntry refuses every entry that is not a well-formed version 1
// entry at its own index describing its own certificate.
func TestDecodeEntryRefusesMalformedEntries(t *testing.T) {
	r := newRig(t)
	ev := r.cert(entry.KindIssuance, payments, "node-a")
	r.appendTo(r.log, ev)
	good, err := r.log.Entry(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := monitor.DecodeEntry(good.Data, 0); err != nil {
		t.Fatalf("the ledger's own entry: %v", err)
	}
	data := string(good.Data)
	swap := func(old, new string) string {
		if !strings.Contains(data, old) {
			t.Fatalf("entry %s has no %q", data, old)
		}
		return strings.Replace(data, old, new, 1)
	}
	for _, c := range []struct {
		name, data string
		index      uint64
		msg        string
	}{
		{"not JSON", "{", 0, "is not a JSON object"},
		{"a JSON array", "[1]", 0, "is not a JSON object"},
		{"version 2", swap(`"v":1`, `"v":2`), 0, "has format version 2; this monitor reads version 1"},
		{"no version", swap(`"v":1,`, ``), 0, "has format version none"},
		{"moved", data, 7, "entry at index 7 says it is at index 0"},
		{"no kind", swap(`"kind":"issuance"`, `"kind":""`), 0, "has no kind"},
		{"bad time", swap(`"time":"`, `"time":"yesterday`), 0, "time \"yesterday"},
		{"bad base64", swap(`"cert":"`, `"cert":"*`), 0, "is not standard base64"},
		{"no certificate", swap(`"cert":"`, `"x":"`), 0, "no certificate"},
		{"other serial", swap(`"serial":"`+ev.Serial, `"serial":"ff`+ev.Serial), 0, "the certificate's serial is " + ev.Serial},
		{"other expiry", swap(ev.NotAfter.UTC().Format("2006-01-02T15:04:05Z"), "2099-01-01T00:00:00Z"), 0, "the certificate is valid"},
		{"other key", swap(ev.PublicKeySHA256, strings.Repeat("0", 64)), 0, "public key hash"},
		{"other identity", swap(`"spiffe_id":"`+payments, `"spiffe_id":"`+shop), 0, "URI SANs"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := monitor.DecodeEntry([]byte(c.data), c.index)
			if err == nil || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("DecodeEntry = %v; want an error saying %q", err, c.msg)
			}
		})
	}
}

// cosigner is a witness key pair signing C2SP cosignature/v1 lines.
type cosigner struct {
	name, vkey string
	priv       ed25519.PrivateKey
	id         uint32
}

func newCosigner(t *testing.T, name string) *cosigner {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	typed := append([]byte{0x04}, pub...)
	h := sha256.Sum256(append([]byte(name+"\n"), typed...))
	id := binary.BigEndian.Uint32(h[:4])
	return &cosigner{name: name, priv: priv, id: id,
		vkey: fmt.Sprintf("%s+%08x+%s", name, id, base64.StdEncoding.EncodeToString(typed))}
}

// cosign appends c's cosignature line to a signed checkpoint.
func (c *cosigner) cosign(t *testing.T, signed []byte, v note.Verifier) []byte {
	t.Helper()
	n, err := note.Open(signed, note.VerifierList(v))
	if err != nil {
		t.Fatal(err)
	}
	ts := time.Now().Unix()
	msg := "cosignature/v1\ntime " + strconv.FormatInt(ts, 10) + "\n" + n.Text
	sig := binary.BigEndian.AppendUint32(nil, c.id)
	sig = binary.BigEndian.AppendUint64(sig, uint64(ts))
	sig = append(sig, ed25519.Sign(c.priv, []byte(msg))...)
	return append(append([]byte(nil), signed...), "— "+c.name+" "+base64.StdEncoding.EncodeToString(sig)+"\n"...)
}

// With a witness policy, a checkpoint is accepted only with a quorum of
// its witnesses' cosignatures.
func TestMonitorChecksWitnessPolicy(t *testing.T) {
	r := newRig(t)
	r.issue(r.log, 3, payments, "a")
	signed, err := r.log.Checkpoint(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	w1, w2 := newCosigner(t, "w1.example/w"), newCosigner(t, "w2.example/w")
	cosigned := w1.cosign(t, signed, r.verifier)
	r.setHandler(tlog.Options{Witnessed: func() []byte { return cosigned }})
	policy := func(quorum int, ws ...*cosigner) *witness.Policy {
		var flags []string
		for i, w := range ws {
			flags = append(flags, fmt.Sprintf("w%d=https://w%d.example/+%s", i+1, i+1, w.vkey))
		}
		p, err := witness.ParsePolicy(quorum, flags)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	path := statePath(t)
	cfg := r.config(monitor.Filter{})
	cfg.Policy = policy(2, w1, w2)
	strict, err := monitor.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	refused(t, strict, path, monitor.ErrInvalid, "has 1 of the 2 witness cosignatures")

	cfg.Policy = policy(1, w1, w2)
	m, err := monitor.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res := verified(t, m, path); res.To != 3 {
		t.Fatalf("witnessed pass reached %d; want 3", res.To)
	}
}
