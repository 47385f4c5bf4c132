package server

import (
	"context"
	"crypto/elliptic"
	"strings"
	"testing"
	"time"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/ca/quota"
	"github.com/castellan-dev/castellan/ca/server/edge"
	"google.golang.org/grpc/codes"
)

// withQuota limits every node to burst certificates, one more per hour.
func withQuota(t testing.TB, burst int) envOption {
	return func(c *Config) {
		q, err := quota.New(quota.Config{Node: quota.Limit{Burst: burst, Every: time.Hour}, IdentityPerTTL: 100, Clock: c.Clock})
		if err != nil {
			t.Fatal(err)
		}
		c.Quota = q
	}
}

// A batch over the node's quota is served in part: the items past it are
// refused with ResourceExhausted, are not signed or logged, and are
// counted; the quota refills with the clock.
func TestBatchOverNodeQuotaIsServedInPart(t *testing.T) {
	e := newEnv(t, withQuota(t, 3))
	const id = "spiffe://cluster.local/ns/a/sa/b"
	e.addEntry(t, id, "n1")
	c := e.agentClient(t, "n1")
	batch := &cav1.BatchSignX509SVIDRequest{}
	for range 5 {
		batch.Requests = append(batch.Requests, &cav1.SignX509SVIDRequest{Csr: workloadCSR(t, ecKey(t, elliptic.P256()), id)})
	}
	size := e.ledger.Size()
	res, err := c.BatchSignX509SVID(context.Background(), batch)
	if err != nil {
		t.Fatal(err)
	}
	issued := 0
	for _, r := range res.GetResults() {
		if r.GetSvid() != nil {
			issued++
			continue
		}
		if codes.Code(r.GetError().GetCode()) != codes.ResourceExhausted || !strings.Contains(r.GetError().GetMessage(), "node issuance quota exceeded for node n1") {
			t.Fatalf("refused item: %v", r.GetError())
		}
	}
	if issued != 3 || e.ledger.Size() != size+3 {
		t.Fatalf("%d issued, %d logged; want 3 and 3", issued, e.ledger.Size()-size)
	}
	if n := e.csrCount(edge.ResultRefused, "quota_node"); n != 2 {
		t.Fatalf("castellan_csr_total{reason=quota_node} = %v, want 2", n)
	}
	e.clock.Add(time.Hour)
	if _, err := c.SignX509SVID(context.Background(), &cav1.SignX509SVIDRequest{Csr: workloadCSR(t, ecKey(t, elliptic.P256()), id)}); err != nil {
		t.Fatalf("an hour later: %v", err)
	}
}
