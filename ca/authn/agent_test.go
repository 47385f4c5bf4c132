package authn

import (
	"strings"
	"testing"

	"github.com/castellan-dev/castellan/ca/refusal"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestAgentIDRoundTrip(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	id, err := AgentID(td, "node-1.zone-a")
	if err != nil || id.String() != "spiffe://cluster.local/castellan/agent/node-1.zone-a" {
		t.Fatalf("AgentID: %v, %v", id, err)
	}
	node, err := NodeOf(td, id)
	if err != nil || node != "node-1.zone-a" {
		t.Fatalf("NodeOf: %q, %v", node, err)
	}
}

func TestNodeOfRejectsNonAgents(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	for _, s := range []string{
		"spiffe://cluster.local/ns/default/sa/app",
		"spiffe://cluster.local/castellan/server",
		"spiffe://other.example/castellan/agent/node-1",
		"spiffe://cluster.local/castellan/agent/node-1/extra",
	} {
		_, err := NodeOf(td, spiffeid.RequireFromString(s))
		if err == nil || refusal.ReasonOf(err) != ReasonNotAgent || !strings.Contains(err.Error(), "is not an agent") {
			t.Errorf("NodeOf(%s): %v", s, err)
		}
	}
}
