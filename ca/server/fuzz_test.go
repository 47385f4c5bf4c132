package server

import (
	"context"
	"crypto/elliptic"
	"testing"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	svidleaf "github.com/castellan-dev/castellan/ca/authority/leaf"
	"github.com/castellan-dev/castellan/ca/refusal"
	"github.com/castellan-dev/castellan/ca/server/issuance"
	"google.golang.org/grpc/codes"
)

// FuzzSignRequest drives the request pipeline (size check, CSR validation,
// TTL, authorization, signing, the ledger) with arbitrary input. Whatever the input, a
// request either is refused with a typed error or yields an SVID for the
// one identity assigned to the caller's node, within the maximum TTL.
func FuzzSignRequest(f *testing.F) {
	e := newEnv(f)
	e.addEntry(f, appID, "node-a")
	good := workloadCSR(f, ecKey(f, elliptic.P256()), appID)
	f.Add(good, int64(0), "")
	f.Add(good, int64(3600), "")
	f.Add(good, int64(-1), "x")
	f.Add(workloadCSR(f, ecKey(f, elliptic.P384()), "spiffe://cluster.local/other"), int64(0), "")
	f.Add(workloadCSR(f, ecKey(f, elliptic.P224()), appID), int64(0), "")
	f.Add(makeCSR(f, ecKey(f, elliptic.P256()), csrSpec{uris: []string{appID}, dns: []string{"a"}}), int64(0), "")
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x00}, int64(1<<62), "")
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, csr []byte, ttl int64, entryID string) {
		it := &issuance.Item{Req: &cav1.SignX509SVIDRequest{Csr: csr, TtlSeconds: ttl, EntryId: entryID}}
		if err := e.srv.issuer.Issue(ctx, "node-a", []*issuance.Item{it}); err != nil {
			t.Fatalf("the call was refused as a whole: %v", err)
		}
		if it.Err != nil {
			if e, ok := refusal.As(it.Err); !ok || e.Reason == "" || e.Code == codes.OK || e.Code == codes.Internal {
				t.Fatalf("bad input not refused with a reason and a status: %v", it.Err)
			}
			if it.Issued != nil {
				t.Fatal("refused request carries a certificate")
			}
			return
		}
		leaf := it.Issued.Chain[0]
		if it.Issued.ID.String() != appID || len(leaf.URIs) != 1 || leaf.URIs[0].String() != appID {
			t.Fatalf("issued %s for a node that may only obtain %s", it.Issued.ID, appID)
		}
		if leaf.NotAfter.Sub(leaf.NotBefore) > e.auth.MaxTTL()+svidleaf.Backdate {
			t.Fatalf("lifetime %s exceeds the max TTL", leaf.NotAfter.Sub(leaf.NotBefore))
		}
	})
}
