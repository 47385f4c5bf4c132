package server

import (
	"context"
	"crypto/elliptic"
	"strings"
	"testing"
	"time"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/ca/authority"
	"github.com/castellan-dev/castellan/ca/server/edge"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestSignRefusesTTLAboveEntryTTL asks over gRPC, as an agent, for more
// than its entry allows: refused with InvalidArgument naming the entry, not
// clamped; at the entry's TTL or with none asked, the SVID lives exactly
// the entry's TTL.
func TestSignRefusesTTLAboveEntryTTL(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	ent, err := e.entries.Create(ctx, &cav1.Entry{SpiffeId: appID, Node: "node-a", TtlSeconds: 600,
		Selectors: []*cav1.Selector{{Type: "unix", Value: "uid:1000"}}})
	if err != nil {
		t.Fatal(err)
	}
	c := e.agentClient(t, "node-a")
	key := ecKey(t, elliptic.P256())
	before := e.csrCount(edge.ResultRefused, authority.ReasonTTLTooLong)
	_, err = c.SignX509SVID(ctx, &cav1.SignX509SVIDRequest{Csr: workloadCSR(t, key, appID), EntryId: ent.Id, TtlSeconds: 601})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "registration entry "+ent.Id) {
		t.Fatalf("TTL above the entry's: %v, want InvalidArgument naming entry %s", err, ent.Id)
	}
	if got := e.csrCount(edge.ResultRefused, authority.ReasonTTLTooLong); got != before+1 {
		t.Fatalf("castellan_csr_total{ttl_too_long} = %v, want %v", got, before+1)
	}
	// Also without naming the entry (found by SPIFFE ID and node).
	if _, err := c.SignX509SVID(ctx, &cav1.SignX509SVIDRequest{Csr: workloadCSR(t, key, appID), TtlSeconds: 3600}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("TTL above the entry's, entry by lookup: %v, want InvalidArgument", err)
	}
	for _, asked := range []int64{600, 0} {
		resp, err := c.SignX509SVID(ctx, &cav1.SignX509SVIDRequest{Csr: workloadCSR(t, key, appID), EntryId: ent.Id, TtlSeconds: asked})
		if err != nil {
			t.Fatalf("TTL %ds: %v", asked, err)
		}
		svid := svidOf(t, resp.GetSvid(), key)
		if got := svid.Certificates[0].NotAfter.Sub(e.clock.Now()); got != 10*time.Minute {
			t.Fatalf("TTL %ds: SVID lives %v, want 10m", asked, got)
		}
	}
}
