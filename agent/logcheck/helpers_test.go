package logcheck_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/agent/cache"
	"github.com/castellan-dev/castellan/agent/logcheck"
	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/internal/witness"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/merkle/testonly"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const origin = "td.test/castellan/ledger"

// testLog is a real RFC 6962 tree of v1 entries, each holding a
// stand-in certificate DER, signed by a log key.
type testLog struct {
	tree   *testonly.Tree
	data   [][]byte // entry data by index
	signer note.Signer
	vkey   string
	tag    string // certificate prefix: logs with other tags fork
}

func newLogKey(t testing.TB) (skey, vkey string) {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		t.Fatal(err)
	}
	return skey, vkey
}

func newTestLog(t testing.TB, skey, vkey, tag string) *testLog {
	t.Helper()
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	return &testLog{tree: testonly.New(rfc6962.DefaultHasher), signer: s, vkey: vkey, tag: tag}
}

// der is the stand-in certificate of entry i.
func (l *testLog) der(i uint64) []byte { return fmt.Appendf(nil, "%s-cert-%d", l.tag, i) }

// grow appends n issuance entries.
func (l *testLog) grow(n int) *testLog {
	for range n {
		i := l.tree.Size()
		e := fmt.Appendf(nil, `{"v":1,"index":%d,"kind":"issuance","time":"2026-01-02T03:04:05Z","cert":%q}`,
			i, base64.StdEncoding.EncodeToString(l.der(i)))
		l.tree.AppendData(e)
		l.data = append(l.data, e)
	}
	return l
}

// appendRaw appends an entry with the given data.
func (l *testLog) appendRaw(e []byte) {
	l.tree.AppendData(e)
	l.data = append(l.data, e)
}

// checkpoint signs the current tree and adds cosignatures by ws.
func (l *testLog) checkpoint(t testing.TB, ws ...*cosigner) []byte {
	t.Helper()
	text := log.Checkpoint{Origin: origin, Size: l.tree.Size(), Hash: l.tree.Hash()}.Marshal()
	signed, err := note.Sign(&note.Note{Text: string(text)}, l.signer)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range ws {
		signed = append(signed, w.line(text, time.Now())...)
	}
	return signed
}

// cosigner is a witness key pair signing cosignature/v1 lines.
type cosigner struct {
	name, vkey string
	priv       ed25519.PrivateKey
	id         uint32
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
	vkey := fmt.Sprintf("%s+%08x+%s", name, id, base64.StdEncoding.EncodeToString(typed))
	return &cosigner{name: name, vkey: vkey, priv: priv, id: id}
}

func (c *cosigner) line(text []byte, ts time.Time) string {
	msg := "cosignature/v1\ntime " + strconv.FormatInt(ts.Unix(), 10) + "\n" + string(text)
	sig := binary.BigEndian.AppendUint32(nil, c.id)
	sig = binary.BigEndian.AppendUint64(sig, uint64(ts.Unix()))
	sig = append(sig, ed25519.Sign(c.priv, []byte(msg))...)
	return "— " + c.name + " " + base64.StdEncoding.EncodeToString(sig) + "\n"
}

func policyOf(t testing.TB, quorum int, ws ...*cosigner) *witness.Policy {
	t.Helper()
	var flags []string
	for i, w := range ws {
		flags = append(flags, fmt.Sprintf("w%d=https://w%d.test/+%s", i, i, w.vkey))
	}
	p, err := witness.ParsePolicy(quorum, flags)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// source serves proofs from a test log the way the CA's GetLogProof does:
// the checkpoint given by cp (rebuilt on every call), proofs against its
// size. Calls counts calls; before, when set, runs first.
type source struct {
	mu     sync.Mutex
	log    *testLog
	cp     func() []byte
	size   func() uint64 // the tree size cp covers
	calls  int
	before func(call int)
}

func (s *source) GetLogProof(_ context.Context, req *cav1.GetLogProofRequest) (*cav1.GetLogProofResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if s.before != nil {
		s.before(s.calls)
	}
	if s.cp == nil {
		return nil, status.Error(codes.FailedPrecondition, "nothing witnessed yet")
	}
	size := s.size()
	resp := &cav1.GetLogProofResponse{Checkpoint: s.cp()}
	if req.GetFromSize() > 0 && req.GetFromSize() < size {
		p, err := s.log.tree.ConsistencyProof(req.GetFromSize(), size)
		if err != nil {
			return nil, err
		}
		resp.ConsistencyProof = p
	}
	for _, idx := range req.GetLogIndexes() {
		if idx >= size {
			continue
		}
		p, err := s.log.tree.InclusionProof(idx, size)
		if err != nil {
			return nil, err
		}
		resp.Inclusions = append(resp.Inclusions, &cav1.LogInclusion{LogIndex: idx, Entry: s.log.data[idx], Proof: p})
	}
	return resp, nil
}

// serveNow makes s serve the log's current tree, cosigned by ws.
func (s *source) serveNow(t testing.TB, ws ...*cosigner) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.serveLocked(t, ws...)
}

func (s *source) serveLocked(t testing.TB, ws ...*cosigner) {
	cp := s.log.checkpoint(t, ws...)
	size := s.log.tree.Size()
	s.cp = func() []byte { return cp }
	s.size = func() uint64 { return size }
}

// openCache opens a real agent cache file in dir.
func openCache(t testing.TB, dir string) *cache.Cache {
	t.Helper()
	c, err := cache.Open(filepath.Join(dir, "cache.db"), cache.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func newChecker(t testing.TB, p *witness.Policy, vkey string, src logcheck.Source, st logcheck.Store, reg *prometheus.Registry) *logcheck.Checker {
	t.Helper()
	c, err := logcheck.New(logcheck.Config{Policy: p, LogKey: vkey, Source: src, Store: st,
		Wait: 500 * time.Millisecond, Poll: 10 * time.Millisecond, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Wait)
	return c
}

func idx(i uint64) *uint64 { return &i }

func counter(t testing.TB, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if len(labels) > 0 && (len(m.GetLabel()) == 0 || m.GetLabel()[0].GetValue() != labels[0]) {
				continue
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}
