package monitor_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/ledger"
	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/tlog/monitor"
	"github.com/castellan-dev/castellan/ca/tlog/monitor/state"
	"github.com/castellan-dev/castellan/internal/clock/clocktest"
	"github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"
)

// refused runs one pass that must fail with kind and a message holding
// msg, and leave the state file byte for byte as it was.
func refused(t *testing.T, m *monitor.Monitor, path string, kind error, msg string) {
	t.Helper()
	before := readFile(t, path)
	_, err := runOnce(t, m, path)
	if !errors.Is(err, kind) || !strings.Contains(err.Error(), msg) {
		t.Fatalf("Run = %v; want %v saying %q", err, kind, msg)
	}
	if after := readFile(t, path); after != before {
		t.Fatalf("the state changed after a refused step:\nbefore %q\nafter  %q", before, after)
	}
}

// verified runs one pass from the saved state that must succeed.
func verified(t *testing.T, m *monitor.Monitor, path string) *outcome {
	t.Helper()
	res, err := runOnce(t, m, path)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// A checkpoint signed by another key under the log's name is refused.
func TestMonitorRefusesCheckpointNotSignedByTheLogKey(t *testing.T) {
	r := newRig(t)
	r.issue(r.log, 3, payments, "a")
	skey, _, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		t.Fatal(err)
	}
	forger, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	r.setTamper(func(path string, body []byte) []byte {
		if path != "/log/checkpoint" {
			return body
		}
		n, err := note.Open(body, note.VerifierList(r.verifier))
		if err != nil {
			t.Errorf("the real checkpoint does not open: %v", err)
			return body
		}
		forged, err := note.Sign(&note.Note{Text: n.Text}, forger)
		if err != nil {
			t.Error(err)
		}
		return forged
	})
	refused(t, r.monitor(monitor.Filter{}), statePath(t), monitor.ErrInvalid, "does not verify with the log key")
}

// Hash tiles that are not the signed tree's are refused: a level-0 tile
// of new entries, and a tile the saved tree's nodes are read from.
func TestMonitorRefusesTilesThatDoNotHashToTheRoot(t *testing.T) {
	r := newRig(t)
	r.noise(r.log, 300, "n")
	m := r.monitor(monitor.Filter{})
	path := statePath(t)
	verified(t, m, path)
	r.noise(r.log, 20, "n")

	flip := func(prefix string) func(string, []byte) []byte {
		return func(path string, body []byte) []byte {
			if !strings.HasPrefix(path, prefix) || len(body) < 32 {
				return body
			}
			body = bytes.Clone(body)
			body[len(body)-1] ^= 1 // the last hash: a new entry, or the saved tree's edge
			return body
		}
	}
	r.setTamper(flip("/log/tile/0/001.p/"))
	refused(t, m, path, monitor.ErrInvalid, "not the signed log")
	r.setTamper(flip("/log/tile/1/000.p/"))
	refused(t, m, path, monitor.ErrInvalid, "not the log it signed")
	r.setTamper(nil)
	if res := verified(t, m, path); res.From != 300 || res.To != 320 {
		t.Fatalf("untampered: [%d, %d); want [300, 320)", res.From, res.To)
	}
}

// An entry altered in its bundle (same length, so the bundle still
// parses) does not hash to the signed root and is refused.
func TestMonitorRefusesAlteredEntry(t *testing.T) {
	r := newRig(t)
	r.issue(r.log, 3, payments, "node-a")
	r.setTamper(func(path string, body []byte) []byte {
		if !strings.HasPrefix(path, "/log/tile/entries/") {
			return body
		}
		return bytes.Replace(body, []byte(`"node-a"`), []byte(`"node-x"`), 1)
	})
	refused(t, r.monitor(monitor.Filter{}), statePath(t), monitor.ErrInvalid, "not the signed log")
}

// Truncated and padded bundles are refused with what is wrong.
func TestMonitorRefusesMalformedBundles(t *testing.T) {
	r := newRig(t)
	r.issue(r.log, 3, payments, "node-a")
	m := r.monitor(monitor.Filter{})
	path := statePath(t)
	for _, c := range []struct {
		name string
		fn   func([]byte) []byte
		msg  string
	}{
		{"cut inside an entry", func(b []byte) []byte { return b[:len(b)-10] }, "is truncated: entry 2 announces"},
		{"cut after an entry", func(b []byte) []byte { return b[:len(b)-len(lastEntry(b))-2] }, "is truncated: it ends after 2 of its 3 entries"},
		{"trailing bytes", func(b []byte) []byte { return append(bytes.Clone(b), 0, 1, 'x') }, "has 3 bytes after its 3 entries"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r.setTamper(func(p string, body []byte) []byte {
				if strings.HasPrefix(p, "/log/tile/entries/") {
					return c.fn(body)
				}
				return body
			})
			refused(t, m, path, monitor.ErrInvalid, c.msg)
		})
	}
}

// lastEntry returns the data of a bundle's last entry.
func lastEntry(b []byte) []byte {
	var last []byte
	for len(b) >= 2 {
		n := int(b[0])<<8 | int(b[1])
		last, b = b[2:2+n], b[2+n:]
	}
	return last
}

// Oversized responses are refused without being read whole.
func TestMonitorRefusesOversizedResponses(t *testing.T) {
	r := newRig(t)
	r.issue(r.log, 3, payments, "node-a")
	path := statePath(t)
	r.setTamper(func(p string, body []byte) []byte {
		if p == "/log/checkpoint" {
			return append(bytes.Clone(body), bytes.Repeat([]byte("x"), 10<<20)...)
		}
		return body
	})
	refused(t, r.monitor(monitor.Filter{}), path, monitor.ErrLimit, "more than 65536 bytes")

	r.setTamper(nil)
	cfg := r.config(monitor.Filter{})
	cfg.Limits.MaxBundle = 1000 // three entries with certificates are larger
	m, err := monitor.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	refused(t, m, path, monitor.ErrLimit, "tile/entries/000.p/3: the server sent more than 1000 bytes")
}

// A server that does not answer within the request limit is refused.
func TestMonitorRefusesSlowServer(t *testing.T) {
	r := newRig(t)
	r.issue(r.log, 3, payments, "node-a")
	release := make(chan struct{})
	defer close(release)
	r.setTamper(func(p string, body []byte) []byte {
		if strings.HasPrefix(p, "/log/tile/") {
			<-release // held until the test ends; the client gives up first
		}
		return body
	})
	cfg := r.config(monitor.Filter{})
	cfg.Limits.Request = 200 * time.Millisecond
	m, err := monitor.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	refused(t, m, statePath(t), monitor.ErrLimit, "did not answer within 200ms")
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("refusing took %s", d)
	}
}

// An issuance entry whose SPIFFE ID is not its certificate's is refused:
// a filter must not be dodged by a log entry that lies.
func TestMonitorRefusesEntryThatMisdescribesItsCertificate(t *testing.T) {
	r := newRig(t)
	ev := r.cert(entry.KindIssuance, payments, "node-a")
	ev.SPIFFEID = shop
	r.appendTo(r.log, ev)
	refused(t, r.monitor(monitor.Filter{SPIFFEIDPrefixes: []string{shop}}), statePath(t), monitor.ErrInvalid,
		"entry 0 (issuance of "+shop+"): the certificate's URI SANs are ["+payments+"]")
}

// A rewritten log under the same key is a fork whether it is longer,
// shorter or as long as the saved tree; the state stays.
func TestMonitorReportsForkAndRollback(t *testing.T) {
	r := newRig(t)
	r.issue(r.log, 10, payments, "a")
	m := r.monitor(monitor.Filter{})
	path := statePath(t)
	verified(t, m, path)

	other := r.openLedger("rewritten.db")
	r.issue(other, 4, shop, "b")
	r.swap(other)
	refused(t, m, path, monitor.ErrFork, "fewer than the 10 of the saved checkpoint")
	r.issue(other, 6, shop, "b")
	refused(t, m, path, monitor.ErrFork, "has another root than the saved one")
	r.issue(other, 5, shop, "b")
	refused(t, m, path, monitor.ErrFork, "does not extend the saved tree of size 10")
}

// Damaged or substituted state files are refused and left alone.
func TestMonitorRefusesDamagedState(t *testing.T) {
	r := newRig(t)
	r.issue(r.log, 2, payments, "a")
	m := r.monitor(monitor.Filter{})
	good := statePath(t)
	verified(t, m, good)
	valid, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	otherKey, _, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := note.NewSigner(otherKey)
	if err != nil {
		t.Fatal(err)
	}
	forged, err := note.Sign(&note.Note{Text: string(log.Checkpoint{Origin: origin, Size: 1, Hash: make([]byte, 32)}.Marshal())}, signer)
	if err != nil {
		t.Fatal(err)
	}
	forgedState, err := json.Marshal(map[string]any{"version": 1, "checkpoint": string(forged)})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, content, msg string
	}{
		{"empty", "", "is not a monitor state file"},
		{"garbage", "\x00\x01 not json", "is not a monitor state file"},
		{"truncated", string(valid[:len(valid)/2]), "is not a monitor state file"},
		{"unknown member", strings.Replace(string(valid), `"version"`, `"size":5,"version"`, 1), "is not a monitor state file"},
		{"other version", strings.Replace(string(valid), `"version":1`, `"version":2`, 1), "has version 2"},
		{"signed by another key", string(forgedState), "does not verify with the log key"},
		{"altered size", strings.Replace(string(valid), `\n2\n`, `\n1\n`, 1), "does not verify with the log key"},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := statePath(t)
			if err := os.WriteFile(path, []byte(c.content), 0o600); err != nil {
				t.Fatal(err)
			}
			refused(t, m, path, state.ErrDamaged, c.msg)
		})
	}
}

// Entries the CA pruned (410 Gone) are still proven through the hash
// tiles; they are counted, not matched.
func TestMonitorProvesPrunedEntriesThroughTiles(t *testing.T) {
	r := newRig(t)
	later := time.Now().Add(48 * time.Hour)
	l, err := ledger.Open(r.dir+"/pruned.db", ledger.Config{KeyFile: r.keyFile, Origin: origin, Retention: time.Hour,
		Clock: clocktest.Func(func() time.Time { return later })})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	r.issue(l, 5, payments, "a") // valid for an hour from now: expired at "later"
	if n, err := l.Prune(context.Background()); err != nil || n != 5 {
		t.Fatalf("Prune: %d %v; want 5", n, err)
	}
	r.issue(l, 1, payments, "a")
	r.swap(l)
	m := r.monitor(monitor.Filter{})
	path := statePath(t)
	// The leaf hashes now come from the tile alone: a wrong one is refused.
	r.setTamper(func(p string, body []byte) []byte {
		if strings.HasPrefix(p, "/log/tile/0/") {
			body = bytes.Clone(body)
			body[0] ^= 1
		}
		return body
	})
	refused(t, m, path, monitor.ErrInvalid, "not the log it signed")
	r.setTamper(nil)
	res := verified(t, m, path)
	// The one bundle holds a pruned entry, so all six are gone.
	if res.Pruned != 6 || res.To != 6 || len(res.Matches) != 0 {
		t.Fatalf("pruned %d, to %d, matches %v; want the 6 entries of the gone bundle proven, none matched", res.Pruned, res.To, serialsOf(res.Matches))
	}
}

// A server cannot hide recent entries by answering 410 Gone for their
// bundle as if the CA had pruned them: an entry read before them, in this
// run or an earlier one, is younger than the retention period.
func TestMonitorRefusesGoneBundleOfRecentEntries(t *testing.T) {
	r := newRig(t)
	r.noise(r.log, 300, "n")
	r.setStatus(gone("/log/tile/entries/001"))
	refused(t, r.monitor(monitor.Filter{}), statePath(t), monitor.ErrInvalid,
		"tile/entries/001.p/44 answers 410 Gone (pruned), but an entry before it (entry 255) was logged at")

	r.setStatus(nil)
	m := r.monitor(monitor.Filter{})
	path := statePath(t)
	verified(t, m, path)
	r.issue(r.log, 2, payments, "a")
	r.setStatus(gone("/log/tile/entries/"))
	refused(t, m, path, monitor.ErrInvalid, "an entry before it (read by an earlier run) was logged at")
}

// gone answers 410 Gone, as for pruned entries, under prefix.
func gone(prefix string) func(string) int {
	return func(p string) int {
		if strings.HasPrefix(p, prefix) {
			return http.StatusGone
		}
		return 0
	}
}
