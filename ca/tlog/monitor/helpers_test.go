package monitor_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/ledger"
	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/logkey"
	"github.com/castellan-dev/castellan/ca/tlog"
	"github.com/castellan-dev/castellan/ca/tlog/logentry"
	"github.com/castellan-dev/castellan/ca/tlog/monitor"
	"golang.org/x/mod/sumdb/note"
)

const origin = "example.org/castellan/ledger"

// rig is a real ledger file served by the real tlog handler over a real
// listener, with a hook that can alter responses (a hostile server) and a
// switch to another ledger under the same key (a rewritten log).
type rig struct {
	t        testing.TB
	dir      string
	keyFile  string
	verifier note.Verifier
	certKey  *ecdsa.PrivateKey
	srv      *httptest.Server
	serial   int64

	mu        sync.Mutex
	log       *ledger.Ledger
	tamper    func(path string, body []byte) []byte
	status    func(path string) int // an error status to answer instead (0: none)
	witnessed func() []byte
	handler   http.Handler
}

func newRig(t testing.TB) *rig {
	t.Helper()
	r := &rig{t: t, dir: t.TempDir()}
	r.keyFile = filepath.Join(r.dir, "log.key")
	vkey, err := logkey.GenerateKeyFile(r.keyFile, origin)
	if err != nil {
		t.Fatal(err)
	}
	if r.verifier, err = note.NewVerifier(vkey); err != nil {
		t.Fatal(err)
	}
	if r.certKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	r.log = r.openLedger("ledger.db")
	r.setHandler(tlog.Config{CheckpointInterval: time.Nanosecond})
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

// openLedger opens (creates) a ledger file under the rig's log key.
func (r *rig) openLedger(name string) *ledger.Ledger {
	r.t.Helper()
	l, err := ledger.Open(filepath.Join(r.dir, name), ledger.Config{KeyFile: r.keyFile, Origin: origin})
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { _ = l.Close() })
	return l
}

// swap serves another ledger from now on.
func (r *rig) swap(l *ledger.Ledger) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.log = l
	r.setHandlerLocked(tlog.Config{CheckpointInterval: time.Nanosecond, Witnessed: r.witnessed})
}

func (r *rig) setHandler(o tlog.Config) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.setHandlerLocked(o)
}

func (r *rig) setHandlerLocked(o tlog.Config) {
	r.witnessed = o.Witnessed
	r.handler = http.StripPrefix("/log", tlog.NewHandler(r.log, o))
}

// setTamper installs fn to rewrite response bodies (nil: none).
func (r *rig) setTamper(fn func(path string, body []byte) []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tamper = fn
}

// setStatus makes the server answer the error status fn returns (0 or
// nil fn: serve normally).
func (r *rig) setStatus(fn func(path string) int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status = fn
}

func (r *rig) serve(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	h, tamper, status := r.handler, r.tamper, r.status
	r.mu.Unlock()
	if code := 0; status != nil {
		if code = status(req.URL.Path); code != 0 {
			http.Error(w, http.StatusText(code), code)
			return
		}
	}
	if tamper == nil {
		h.ServeHTTP(w, req)
		return
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.Header().Del("Content-Length")
	w.WriteHeader(rec.Code)
	_, _ = w.Write(tamper(req.URL.Path, rec.Body.Bytes()))
}

// config returns a monitor configuration for the rig's log.
func (r *rig) config(f monitor.Filter) monitor.Config {
	u, err := url.Parse(r.srv.URL + "/log/")
	if err != nil {
		r.t.Fatal(err)
	}
	return monitor.Config{URL: u, LogKey: r.verifier, Filter: f, Limits: monitor.Limits{Request: 5 * time.Second}}
}

func (r *rig) monitor(f monitor.Filter) *monitor.Monitor {
	r.t.Helper()
	m, err := monitor.New(r.config(f))
	if err != nil {
		r.t.Fatal(err)
	}
	return m
}

// cert returns an issuance event for a real certificate of id.
func (r *rig) cert(kind entry.Kind, id, node string) entry.Event {
	r.t.Helper()
	r.serial++
	u, err := url.Parse(id)
	if err != nil {
		r.t.Fatal(err)
	}
	now := time.Now().Truncate(time.Second)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(0x1000 + r.serial), NotBefore: now.Add(-time.Minute),
		NotAfter: now.Add(time.Hour), URIs: []*url.URL{u}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &r.certKey.PublicKey, r.certKey)
	if err != nil {
		r.t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		r.t.Fatal(err)
	}
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return entry.Event{Kind: kind, Serial: c.SerialNumber.Text(16), SPIFFEID: id, Node: node,
		NotBefore: c.NotBefore, NotAfter: c.NotAfter, PublicKeySHA256: hex.EncodeToString(sum[:]), CertDER: der}
}

// appendTo appends events to l and returns their indexes.
func (r *rig) appendTo(l *ledger.Ledger, evs ...entry.Event) []uint64 {
	r.t.Helper()
	es, err := l.Append(context.Background(), evs...)
	if err != nil {
		r.t.Fatal(err)
	}
	return es
}

// issue appends n issuances for id on node and returns their serials.
func (r *rig) issue(l *ledger.Ledger, n int, id, node string) []string {
	r.t.Helper()
	evs := make([]entry.Event, n)
	for i := range evs {
		evs[i] = r.cert(entry.KindIssuance, id, node)
	}
	r.appendTo(l, evs...)
	var serials []string
	for _, e := range evs {
		serials = append(serials, e.Serial)
	}
	return serials
}

// noise appends n join-token uses (entries without certificates).
func (r *rig) noise(l *ledger.Ledger, n int, node string) {
	r.t.Helper()
	evs := make([]entry.Event, n)
	for i := range evs {
		evs[i] = entry.Event{Kind: entry.KindJoinTokenUse, Node: node, SPIFFEID: "spiffe://example.org/castellan/agent/" + node}
	}
	r.appendTo(l, evs...)
}

func serialsOf(es []logentry.Entry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Serial)
	}
	return out
}

// statePath returns a state file path in a fresh directory.
func statePath(t testing.TB) string {
	t.Helper()
	return filepath.Join(t.TempDir(), "monitor.state")
}

// readFile returns path's content ("" if missing).
func readFile(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}

// outcome is one pass's result and the matches it reported.
type outcome struct {
	*monitor.Result
	Matches []logentry.Entry
	Reports int // calls of Report
}

// runOnce makes one pass with state at path and returns what it did.
func runOnce(t testing.TB, m *monitor.Monitor, path string) (*outcome, error) {
	t.Helper()
	out := &outcome{}
	err := m.Run(context.Background(), monitor.RunOptions{StatePath: path,
		Report: func(es []logentry.Entry) error {
			out.Matches = append(out.Matches, es...)
			out.Reports++
			return nil
		},
		Stepped: func(res *monitor.Result) { out.Result = res }})
	return out, err
}

func equalStrings(a, b []string) bool {
	return fmt.Sprint(a) == fmt.Sprint(b)
}
