package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/ledger"
	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/logkey"
	"github.com/castellan-dev/castellan/ca/tlog"
	"golang.org/x/mod/sumdb/note"
)

// monitorLog serves real ledgers under one key through the real tlog
// handler; use switches to another ledger (a rewritten log).
type monitorLog struct {
	dir, keyFile, vkey string
	srv                *httptest.Server
	mu                 sync.Mutex
	h                  http.Handler
}

func newMonitorLog(t *testing.T) *monitorLog {
	t.Helper()
	ml := &monitorLog{dir: t.TempDir()}
	ml.keyFile = filepath.Join(ml.dir, "log.key")
	var err error
	if ml.vkey, err = logkey.GenerateKeyFile(ml.keyFile, "example.org/castellan/ledger"); err != nil {
		t.Fatal(err)
	}
	ml.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ml.mu.Lock()
		h := ml.h
		ml.mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(ml.srv.Close)
	return ml
}

// open opens ledger file name under the log key and serves it.
func (ml *monitorLog) open(t *testing.T, name string) *ledger.Ledger {
	t.Helper()
	l, err := ledger.Open(filepath.Join(ml.dir, name), ledger.Config{KeyFile: ml.keyFile, Origin: "example.org/castellan/ledger"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	ml.mu.Lock()
	ml.h = http.StripPrefix("/log", tlog.NewHandler(l, tlog.Config{CheckpointInterval: time.Nanosecond}))
	ml.mu.Unlock()
	return l
}

// joins appends join-token uses of nodes.
func joins(t *testing.T, l *ledger.Ledger, nodes ...string) {
	t.Helper()
	var evs []entry.Event
	for _, n := range nodes {
		evs = append(evs, entry.Event{Kind: entry.KindJoinTokenUse, Node: n, SPIFFEID: "spiffe://example.org/castellan/agent/" + n})
	}
	if _, err := l.Append(context.Background(), evs...); err != nil {
		t.Fatal(err)
	}
}

// runMonitorCmd runs castellanctl ledger monitor with args and returns
// the exit code, stdout and stderr.
func runMonitorCmd(t *testing.T, ml *monitorLog, state string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	all := append([]string{"ledger", "monitor", "--log-url", ml.srv.URL + "/log/", "--log-key", ml.vkey, "--state", state}, args...)
	code := run(context.Background(), all, func(string) string { return "" }, &out, &errOut)
	return code, out.String(), errOut.String()
}

// ledger monitor prints the matching entries as JSON lines, continues from
// its state, and exits 5 on a rewritten log and 6 on a damaged state,
// leaving the state alone.
func TestLedgerMonitorCommand(t *testing.T) {
	ml := newMonitorLog(t)
	l := ml.open(t, "ledger.db")
	joins(t, l, "n1", "n2", "n1", "n3")
	state := filepath.Join(t.TempDir(), "state.json")

	code, out, errOut := runMonitorCmd(t, ml, state, "--node", "n1", "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var idx []uint64
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var e struct {
			Index uint64 `json:"index"`
			Kind  string `json:"kind"`
			Node  string `json:"node"`
		}
		if err := json.Unmarshal([]byte(line), &e); err != nil || e.Node != "n1" || e.Kind != "join_token_use" {
			t.Fatalf("line %q: %+v %v", line, e, err)
		}
		idx = append(idx, e.Index)
	}
	if len(idx) != 2 || idx[0] != 0 || idx[1] != 2 {
		t.Fatalf("matches at %v; want entries 0 and 2\n%s", idx, out)
	}
	if !strings.Contains(errOut, "verified entries 0 to 3 against the signed checkpoint of size 4: 2 matching") {
		t.Errorf("summary: %q", errOut)
	}

	joins(t, l, "n1")
	code, out, _ = runMonitorCmd(t, ml, state, "--node", "n1")
	if code != 0 || !strings.Contains(out, "INDEX") || strings.Count(out, "join_token_use") != 1 || !strings.Contains(out, "\n4 ") {
		t.Fatalf("rerun: exit %d, table %q; want only entry 4", code, out)
	}
	saved, err := os.ReadFile(state)
	if err != nil {
		t.Fatal(err)
	}

	joins(t, ml.open(t, "rewritten.db"), "n9", "n9")
	code, _, errOut = runMonitorCmd(t, ml, state)
	if code != 5 || !strings.Contains(errOut, "LOG FORK OR ROLLBACK") || !strings.Contains(errOut, "fewer than the 5 of the saved checkpoint") {
		t.Fatalf("rewritten log: exit %d, %q; want %d and a rollback", code, errOut, 5)
	}
	if now, _ := os.ReadFile(state); !bytes.Equal(now, saved) {
		t.Fatal("the state changed after a fork")
	}

	if err := os.WriteFile(state, saved[:len(saved)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut = runMonitorCmd(t, ml, state); code != 6 || !strings.Contains(errOut, "damaged state file") {
		t.Fatalf("damaged state: exit %d, %q; want %d", code, errOut, 6)
	}
}

// A checkpoint that does not verify with the pinned key exits 3, an
// oversized one 7, and bad flags exit 2.
func TestLedgerMonitorRefusesOtherKeyAndBadFlags(t *testing.T) {
	ml := newMonitorLog(t)
	joins(t, ml.open(t, "ledger.db"), "n1")
	_, otherVKey, err := note.GenerateKey(rand.Reader, "example.org/castellan/ledger")
	if err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(t.TempDir(), "state.json")
	if code, _, errOut := runMonitorCmd(t, ml, state, "--log-key", otherVKey); code != 3 || !strings.Contains(errOut, "does not verify with the log key") {
		t.Fatalf("other key: exit %d, %q; want %d", code, errOut, 3)
	}
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Fatalf("a state was written after a refused pass: %v", err)
	}
	ml.mu.Lock()
	ml.h = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(bytes.Repeat([]byte("x"), 1<<20)) })
	ml.mu.Unlock()
	if code, _, errOut := runMonitorCmd(t, ml, state); code != 7 || !strings.Contains(errOut, "more than 65536 bytes") {
		t.Fatalf("oversized checkpoint: exit %d, %q; want %d", code, errOut, 7)
	}
	for _, args := range [][]string{{"--log-key", "nonsense"}, {"--follow", "--interval", "0s"}, {"-o", "yaml"}, {"--witness-quorum", "1"}, {"extra"}} {
		if code, _, errOut := runMonitorCmd(t, ml, state, args...); code != 2 {
			t.Errorf("%v: exit %d (%q); want 2", args, code, errOut)
		}
	}
}
