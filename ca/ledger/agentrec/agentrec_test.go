package agentrec

import (
	"testing"

	"github.com/castellan-dev/castellan/ca/ledger/entry"
)

const agentA = "spiffe://cluster.local/castellan/agent/node-a"

func TestIsAgentCert(t *testing.T) {
	for _, tc := range []struct {
		id, node string
		want     bool
	}{
		{agentA, "node-a", true},
		{agentA, "node-b", false},
		{"spiffe://cluster.local/castellan/agent/node-a", "a", false},
		{"spiffe://cluster.local/ns/x/castellan/agent/node-a", "node-a", false},
		{"spiffe://cluster.local/ns/it/sa/app", "node-a", false},
		{agentA, "", false},
	} {
		ev := entry.Event{Kind: entry.KindIssuance, SPIFFEID: tc.id, Node: tc.node}
		if got := IsAgentCert(&ev); got != tc.want {
			t.Errorf("IsAgentCert(%s on %q) = %v, want %v", tc.id, tc.node, got, tc.want)
		}
	}
}
