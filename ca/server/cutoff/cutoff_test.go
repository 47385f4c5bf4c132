package cutoff

import (
	"context"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/authn"
	"github.com/castellan-dev/castellan/ca/ledger/agents"
	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/revocation"
	"github.com/castellan-dev/castellan/ca/refusal"
	"github.com/castellan-dev/castellan/ca/server/internal/peertest"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// fakeLedger records bans and revocations in memory.
type fakeLedger struct {
	mu      sync.Mutex
	bans    map[string]agents.Ban
	revoked map[string]bool
	// issued are the unexpired serials by node.
	issued map[string][]string
}

func newFakeLedger() *fakeLedger {
	return &fakeLedger{bans: map[string]agents.Ban{}, revoked: map[string]bool{}, issued: map[string][]string{}}
}

func (l *fakeLedger) Banned(node string) (agents.Ban, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.bans[node]
	return b, ok
}

func (l *fakeLedger) RevokeNodeCertificates(_ context.Context, node string) ([]string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.bans[node]; !ok {
		return nil, nil
	}
	var out []string
	for _, s := range l.issued[node] {
		if !l.revoked[s] {
			l.revoked[s] = true
			out = append(out, s)
		}
	}
	return out, nil
}

func (l *fakeLedger) Agents(context.Context) ([]agents.Agent, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []agents.Agent
	for node := range l.issued {
		a := agents.Agent{Node: node}
		if b, ok := l.bans[node]; ok {
			a.Ban = &b
		}
		out = append(out, a)
	}
	return out, nil
}

func (l *fakeLedger) IsRevoked(serial string, _ time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.revoked[serial]
}

func (l *fakeLedger) Revoke(_ context.Context, serial, _ string) (entry.Entry, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.revoked[serial] {
		return entry.Entry{}, revocation.ErrAlreadyRevoked
	}
	l.revoked[serial] = true
	return entry.Entry{}, nil
}

// A banned node's agent certificate is refused (PermissionDenied, reason
// node_banned, naming the node and how to lift the ban); a revoked
// certificate is refused (Unauthenticated) whoever holds it; a caller
// without a certificate, or another node's, passes.
func TestRefusePeer(t *testing.T) {
	l := newFakeLedger()
	l.bans["node-a"] = agents.Ban{Node: "node-a", Index: 7, Time: time.Now(), Reason: "stolen"}
	l.revoked["1f"] = true
	g := New(Config{Ledger: l, TrustDomain: td})
	agentA, err := authn.AgentID(td, "node-a")
	if err != nil {
		t.Fatal(err)
	}
	agentB, _ := authn.AgentID(td, "node-b")

	err = g.RefusePeer(peertest.Context(t, agentA.String(), 2))
	if e, ok := refusal.As(err); !ok || e.Reason != ReasonNodeBanned || status.Code(err) != codes.PermissionDenied ||
		!strings.Contains(err.Error(), `node "node-a" is banned`) || !strings.Contains(err.Error(), "castellanctl agent unban node-a") {
		t.Errorf("banned node's agent: %v", err)
	}
	err = g.RefusePeer(peertest.Context(t, "spiffe://example.org/ns/x/sa/y", 0x1f))
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "serial 1f") {
		t.Errorf("revoked workload certificate: %v, want Unauthenticated naming serial 1f", err)
	}
	if err := g.RefusePeer(peertest.Context(t, agentB.String(), 3)); err != nil {
		t.Errorf("another node's agent: %v", err)
	}
	if err := g.RefusePeer(context.Background()); err != nil {
		t.Errorf("no client certificate: %v", err)
	}
	if err := g.CheckNode(""); err != nil {
		t.Errorf("no node: %v", err)
	}
}

// Certificates recorded for a node banned meanwhile are revoked and the
// call refused; so is a renewal whose parent was revoked meanwhile; at
// start, a banned node's unrevoked certificates are revoked.
func TestRevocationsAfterTheFact(t *testing.T) {
	ctx := context.Background()
	l := newFakeLedger()
	l.issued["node-a"] = []string{"a1", "a2"}
	l.issued["node-b"] = []string{"b1"}
	g := New(Config{Ledger: l, TrustDomain: td})
	if err := g.RefuseIfBannedAfterRecord(ctx, "node-a"); err != nil || l.revoked["a1"] {
		t.Fatalf("unbanned node: %v, revoked %v", err, l.revoked)
	}
	l.bans["node-a"] = agents.Ban{Node: "node-a"}
	if err := g.RefuseIfBannedAfterRecord(ctx, "node-a"); status.Code(err) != codes.PermissionDenied || !l.revoked["a1"] || !l.revoked["a2"] {
		t.Fatalf("banned meanwhile: %v, revoked %v", err, l.revoked)
	}
	l.revoked["p"] = true
	if err := g.RefuseAfterRenewal(ctx, "node-b", "p", "c"); status.Code(err) != codes.Unauthenticated || !l.revoked["c"] {
		t.Fatalf("parent revoked meanwhile: %v, child revoked %v", err, l.revoked["c"])
	}
	if err := g.RefuseAfterRenewal(ctx, "node-b", "b1", "c2"); err != nil || l.revoked["c2"] {
		t.Fatalf("a clean renewal: %v, child revoked %v", err, l.revoked["c2"])
	}
	l.bans["node-b"] = agents.Ban{Node: "node-b"}
	if err := g.Reconcile(ctx); err != nil || !l.revoked["b1"] {
		t.Fatalf("reconcile: %v, b1 revoked %v", err, l.revoked["b1"])
	}
	if got := slices.Sorted(maps.Keys(l.revoked)); !slices.Equal(got, []string{"a1", "a2", "b1", "c", "p"}) {
		t.Fatalf("revoked %v", got)
	}
}
