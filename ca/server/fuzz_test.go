package server

import (
	"context"
	"crypto/elliptic"
	"testing"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	svidleaf "github.com/castellan-dev/castellan/ca/authority/leaf"
	"github.com/castellan-dev/castellan/ca/refusal"
	"google.golang.org/grpc/codes"
)

// FuzzSignRequest drives the request pipeline (size check, CSR validation,
// TTL, authorization, signing) with arbitrary input. Whatever the input, a
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
		it := &issuance{req: &cav1.SignX509SVIDRequest{Csr: csr, TtlSeconds: ttl, EntryId: entryID}}
		e.srv.prepare(ctx, "node-a", it)
		if it.err != nil {
			if e, ok := refusal.As(it.err); !ok || e.Reason == "" || e.Code == codes.OK || e.Code == codes.Internal {
				t.Fatalf("bad input not refused with a reason and a status: %v", it.err)
			}
			if it.issued != nil {
				t.Fatal("refused request carries a certificate")
			}
			return
		}
		leaf := it.issued.Chain[0]
		if it.issued.ID.String() != appID || len(leaf.URIs) != 1 || leaf.URIs[0].String() != appID {
			t.Fatalf("issued %s for a node that may only obtain %s", it.issued.ID, appID)
		}
		if leaf.NotAfter.Sub(leaf.NotBefore) > e.auth.MaxTTL()+svidleaf.Backdate {
			t.Fatalf("lifetime %s exceeds the max TTL", leaf.NotAfter.Sub(leaf.NotBefore))
		}
	})
}
