package witness_test

import (
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

	"github.com/castellan-dev/castellan/ca/witness"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/merkle/testonly"
	"golang.org/x/mod/sumdb/note"
)

// testOrigin is the origin of the logs the tests witness.
const testOrigin = "castellan.test/ledger"

// testLog is a real RFC 6962 Merkle tree whose checkpoints are signed by
// a log key, as the CA's ledger signs them.
type testLog struct {
	tree     *testonly.Tree
	signer   note.Signer
	verifier note.Verifier
	vkey     string
	prefix   string // entry content prefix: two logs with different prefixes fork
}

// logKey is a log signing key: skey, vkey.
type logKey struct{ skey, vkey string }

func newLogKey(t testing.TB, origin string) logKey {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		t.Fatal(err)
	}
	return logKey{skey, vkey}
}

// newTestLog returns an empty log signed with k; prefix distinguishes
// entries of logs that share a key.
func newTestLog(t testing.TB, k logKey, prefix string) *testLog {
	t.Helper()
	s, err := note.NewSigner(k.skey)
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(k.vkey)
	if err != nil {
		t.Fatal(err)
	}
	return &testLog{tree: testonly.New(rfc6962.DefaultHasher), signer: s, verifier: v, vkey: k.vkey, prefix: prefix}
}

// grow appends n entries.
func (l *testLog) grow(n int) *testLog {
	for range n {
		l.tree.AppendData(fmt.Appendf(nil, "%s entry %d", l.prefix, l.tree.Size()))
	}
	return l
}

// checkpoint signs a checkpoint of the current tree.
func (l *testLog) checkpoint(t testing.TB) []byte {
	t.Helper()
	text := log.Checkpoint{Origin: l.signer.Name(), Size: l.tree.Size(), Hash: l.tree.Hash()}.Marshal()
	signed, err := note.Sign(&note.Note{Text: string(text)}, l.signer)
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

// proof is the log's ProofFunc.
func (l *testLog) proof(old, new uint64) ([][]byte, error) {
	return l.tree.ConsistencyProof(old, new)
}

// cosigner is a witness key pair: the private key signs cosignature/v1
// lines the way a witness does, for fake witnesses.
type cosigner struct {
	name string
	skey string // note private key (type 0x01), as omniwitness reads it
	vkey string // cosignature/v1 verifier key (type 0x04)
	priv ed25519.PrivateKey
	id   uint32
}

func newCosigner(t testing.TB, name string) *cosigner {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	typed := append([]byte{0x04}, pub...)
	h := sha256.Sum256(append([]byte(name+"\n"), typed...))
	id := binary.BigEndian.Uint32(h[:4])
	// The note private key form: PRIVATE+KEY+name+id+base64(0x01 || seed),
	// whose id is that of the plain Ed25519 key.
	plain := append([]byte{0x01}, pub...)
	hp := sha256.Sum256(append([]byte(name+"\n"), plain...))
	skey := fmt.Sprintf("PRIVATE+KEY+%s+%08x+%s", name, binary.BigEndian.Uint32(hp[:4]),
		base64.StdEncoding.EncodeToString(append([]byte{0x01}, priv.Seed()...)))
	vkey := fmt.Sprintf("%s+%08x+%s", name, id, base64.StdEncoding.EncodeToString(typed))
	return &cosigner{name: name, skey: skey, vkey: vkey, priv: priv, id: id}
}

// line is the cosignature line of the checkpoint text at time ts.
func (c *cosigner) line(text []byte, ts time.Time) string {
	msg := "cosignature/v1\ntime " + strconv.FormatInt(ts.Unix(), 10) + "\n" + string(text)
	sig := binary.BigEndian.AppendUint32(nil, c.id)
	sig = binary.BigEndian.AppendUint64(sig, uint64(ts.Unix()))
	sig = append(sig, ed25519.Sign(c.priv, []byte(msg))...)
	return "— " + c.name + " " + base64.StdEncoding.EncodeToString(sig) + "\n"
}

// noteText returns the text of a signed note (up to the blank line).
func noteText(t testing.TB, signed []byte) []byte {
	t.Helper()
	i := strings.LastIndex(string(signed), "\n\n")
	if i < 0 {
		t.Fatalf("not a signed note: %q", signed)
	}
	return signed[:i+1]
}

// policy builds a policy of the given witnesses (name -> URL) and quorum.
func policy(t testing.TB, quorum int, ws ...witnessSpec) *witness.Policy {
	t.Helper()
	var flags []string
	for _, w := range ws {
		flags = append(flags, w.name+"="+w.url+"+"+w.c.vkey)
	}
	p, err := witness.ParsePolicy(quorum, flags)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

type witnessSpec struct {
	name, url string
	c         *cosigner
}

// metricValue returns the value of the counter or gauge name whose label
// values are labels (in label-name order), 0 if absent.
func metricValue(t testing.TB, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for i, l := range m.GetLabel() {
				if l.GetValue() != labels[i] {
					continue next
				}
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}
