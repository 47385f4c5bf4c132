package manager

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/agent/client/catest"
	"github.com/castellan-dev/castellan/agent/state"
	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
)

// lockedBuffer is a log sink the manager's goroutines may write to while
// the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// warnings returns the entry IDs of the "ANY local user" warnings logged.
func (l *lockedBuffer) warnings(t *testing.T) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var ids []string
	for _, line := range strings.Split(strings.TrimSpace(l.b.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if msg, _ := rec["msg"].(string); strings.Contains(msg, "ANY local user") && rec["level"] == "WARN" {
			id, _ := rec["entry_id"].(string)
			ids = append(ids, id)
		}
	}
	return ids
}

// TestAgentWarnsOnceForAnyUserEntry: an entry the operator created with
// --allow-any-user is logged as a warning when the agent receives it, once,
// however many times the CA resends its state; other entries are not.
func TestAgentWarnsOnceForAnyUserEntry(t *testing.T) {
	ca := catest.New(t, td)
	ca.Start(t)
	open := entry("ratings", time.Minute)
	open.Selectors = []*cav1.Selector{{Type: "unix", Value: "path:/usr/bin/ratings"}}
	open.AllowAnyUser = true
	openID := ca.AddEntry(t, open).Id
	boundID := ca.AddEntry(t, entry("details", time.Minute)).Id
	logs := &lockedBuffer{}
	e := newEnv(t, ca, t.TempDir())
	e.log = slog.New(slog.NewJSONHandler(logs, nil))
	e.start(ca.JoinToken(t, "node-1"))
	e.waitSnapshot("both served", func(s *state.Snapshot) bool { return find(s, openID) != nil && find(s, boundID) != nil })
	// Two more full states: each resends both entries.
	later := ca.AddEntry(t, entry("reviews", time.Minute)).Id
	e.waitSnapshot("later served", serving(later))
	ca.DeleteEntry(t, later)
	e.waitSnapshot("later dropped", func(s *state.Snapshot) bool { return find(s, later) == nil })
	if got := logs.warnings(t); len(got) != 1 || got[0] != openID {
		t.Fatalf("any-user warnings for entries %q, want exactly one, for %q", got, openID)
	}
}
