package server

import (
	"context"
	"crypto/elliptic"
	"crypto/x509"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	adminv1 "github.com/castellan-dev/castellan/api/castellan/admin/v1"
	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/server/adminsock"
	"github.com/castellan-dev/castellan/ca/server/edge"
	"github.com/castellan-dev/castellan/internal/serial"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

func TestAgentGetsWorkloadSVIDThatVerifiesAndIsInLedger(t *testing.T) {
	e := newEnv(t)
	ent := e.addEntry(t, appID, "node-a")
	agent := e.agentClient(t, "node-a")
	ctx := context.Background()
	key := ecKey(t, elliptic.P256())
	size := e.ledger.Size()
	issuedBefore := e.csrCount(edge.ResultIssued, edge.ReasonOK)

	resp, err := agent.SignX509SVID(ctx, &cav1.SignX509SVIDRequest{Csr: workloadCSR(t, key, appID), TtlSeconds: 600, EntryId: ent.Id})
	if err != nil {
		t.Fatal(err)
	}
	svid := svidOf(t, resp.GetSvid(), key)
	id, chains, err := x509svid.Verify(svid.Certificates, e.bundle())
	if err != nil || id.String() != appID || len(chains) == 0 {
		t.Fatalf("Verify: id %v, err %v", id, err)
	}
	leaf := svid.Certificates[0]
	if got := leaf.NotAfter.Sub(e.clock.Now()); got != 10*time.Minute {
		t.Errorf("lifetime %s, want the requested 10m", got)
	}
	if resp.GetSvid().GetSerial() != leaf.SerialNumber.Text(16) {
		t.Errorf("serial %q does not match the leaf", resp.GetSvid().GetSerial())
	}
	if e.ledger.Size() != size+1 {
		t.Fatalf("ledger size %d, want %d", e.ledger.Size(), size+1)
	}
	rec, err := e.ledger.Get(ctx, resp.GetSvid().GetSerial())
	if err != nil {
		t.Fatal(err)
	}
	if rec.Kind != entry.KindIssuance || rec.Node != "node-a" || rec.SPIFFEID != appID || string(rec.CertDER) != string(leaf.Raw) {
		t.Errorf("ledger entry %+v does not describe the issued SVID", rec.Event)
	}
	if e.csrCount(edge.ResultIssued, edge.ReasonOK)-issuedBefore != 1 {
		t.Error("issuance not counted")
	}
}

func TestBatchIssuesGoodItemsAndReportsBadOnes(t *testing.T) {
	e := newEnv(t)
	e.addEntry(t, appID, "node-a")
	agent := e.agentClient(t, "node-a")
	ctx := context.Background()
	reqs := mixedBatch(t, 12)
	reqs[0].Csr = workloadCSR(t, rsaKey(t, 2048), appID)
	reqs[1].Csr = workloadCSR(t, ecKey(t, elliptic.P384()), appID)
	size := e.ledger.Size()
	resp, err := agent.BatchSignX509SVID(ctx, &cav1.BatchSignX509SVIDRequest{Requests: reqs})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetResults()) != len(reqs) {
		t.Fatalf("%d results for %d requests", len(resp.GetResults()), len(reqs))
	}
	good := 0
	for i, r := range resp.GetResults() {
		if i%4 == 3 {
			if r.GetError().GetCode() != int32(codes.PermissionDenied) || !strings.Contains(r.GetError().GetMessage(), "not/mine") {
				t.Errorf("item %d: got %v, want PermissionDenied naming the ID", i, r.GetResult())
			}
			continue
		}
		chain := certs(t, r.GetSvid().GetCertChain())
		if _, _, err := x509svid.Verify(chain, e.bundle()); err != nil {
			t.Errorf("item %d: %v", i, err)
		}
		good++
	}
	if got := e.ledger.Size() - size; got != uint64(good) {
		t.Errorf("ledger grew by %d, want %d (the issued items only)", got, good)
	}
}

// mixedBatch returns n requests for appID, except every fourth (i%4 == 3),
// which is for an identity no entry assigns.
func mixedBatch(t *testing.T, n int) []*cav1.SignX509SVIDRequest {
	t.Helper()
	var reqs []*cav1.SignX509SVIDRequest
	for i := range n {
		id := appID
		if i%4 == 3 {
			id = "spiffe://cluster.local/not/mine"
		}
		reqs = append(reqs, &cav1.SignX509SVIDRequest{Csr: workloadCSR(t, ecKey(t, elliptic.P256()), id)})
	}
	return reqs
}

func certs(t *testing.T, ders [][]byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for _, d := range ders {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

func TestAttestIssuesAgentSVIDAndRecordsTokenUse(t *testing.T) {
	e := newEnv(t)
	size := e.ledger.Size()
	svid := e.attest(t, "node-a")
	if svid.ID.String() != "spiffe://cluster.local/castellan/agent/node-a" {
		t.Fatalf("agent ID %s", svid.ID)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, e.bundle()); err != nil {
		t.Fatal(err)
	}
	if got := svid.Certificates[0].NotAfter.Sub(e.clock.Now()); got != DefaultAgentTTL {
		t.Errorf("agent SVID lifetime %s, want %s", got, DefaultAgentTTL)
	}
	if e.ledger.Size() != size+2 {
		t.Fatalf("ledger grew by %d, want 2 (join-token use + issuance)", e.ledger.Size()-size)
	}
	first, err := e.ledger.Entry(context.Background(), size)
	if err != nil || first.Kind != entry.KindJoinTokenUse || first.Node != "node-a" {
		t.Fatalf("first new ledger entry %+v, %v; want a join-token use by node-a", first.Event, err)
	}
}

func TestRenewAgentKeepsNodeIdentity(t *testing.T) {
	e := newEnv(t)
	_, agent := e.dial(t, e.mtlsConfig(e.attest(t, "node-a")))
	key := ecKey(t, elliptic.P256())
	e.clock.Add(DefaultAgentTTL / 2)
	resp, err := agent.RenewAgent(context.Background(), &cav1.RenewAgentRequest{Csr: agentCSR(t, key)})
	if err != nil {
		t.Fatal(err)
	}
	renewed := svidOf(t, resp.GetSvid(), key)
	if renewed.ID.String() != "spiffe://cluster.local/castellan/agent/node-a" {
		t.Fatalf("renewed ID %s", renewed.ID)
	}
	rec, err := e.ledger.Get(context.Background(), resp.GetSvid().GetSerial())
	if err != nil || rec.Kind != entry.KindRenewal {
		t.Fatalf("ledger entry %+v, %v; want a renewal", rec.Event, err)
	}
	if _, err := e.anonClient(t).RenewAgent(context.Background(), &cav1.RenewAgentRequest{Csr: agentCSR(t, key)}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("renew without client cert: %v, want Unauthenticated", err)
	}
}

func TestWorkloadSVIDCannotActAsAgent(t *testing.T) {
	e := newEnv(t)
	e.addEntry(t, appID, "node-a")
	agent := e.agentClient(t, "node-a")
	key := ecKey(t, elliptic.P256())
	resp, err := agent.SignX509SVID(context.Background(), &cav1.SignX509SVIDRequest{Csr: workloadCSR(t, key, appID)})
	if err != nil {
		t.Fatal(err)
	}
	_, workload := e.dial(t, e.mtlsConfig(svidOf(t, resp.GetSvid(), key)))
	_, err = workload.SignX509SVID(context.Background(), &cav1.SignX509SVIDRequest{Csr: workloadCSR(t, key, appID)})
	if st := status.Convert(err); st.Code() != codes.Unauthenticated || !strings.Contains(st.Message(), "is not an agent") {
		t.Fatalf("got %v %q, want Unauthenticated: not an agent", st.Code(), st.Message())
	}
}

func TestSyncAgentStreamsStateOnChange(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e.addEntry(t, appID, "node-a")
	stream, err := e.agentClient(t, "node-a").SyncAgent(ctx, &cav1.SyncAgentRequest{})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if n := len(first.GetState().GetEntries()); n != 1 || first.GetState().GetBundle().GetTrustDomain() != "cluster.local" {
		t.Fatalf("initial state: %d entries, bundle %v", n, first.GetState().GetBundle())
	}
	e.addEntry(t, "spiffe://cluster.local/ns/x/sa/other-node", "node-b") // not ours: no message
	added := e.addEntry(t, "spiffe://cluster.local/ns/default/sa/second", "node-a")
	next, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if n := len(next.GetState().GetEntries()); n != 2 {
		t.Fatalf("after adding an entry: %d entries, want 2", n)
	}
	// Revoke the agent's workload cert: the serial is pushed.
	key := ecKey(t, elliptic.P256())
	agent := e.agentClient(t, "node-a")
	resp, err := agent.SignX509SVID(ctx, &cav1.SignX509SVIDRequest{Csr: workloadCSR(t, key, appID)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.ledger.Revoke(ctx, resp.GetSvid().GetSerial(), "key compromise"); err != nil {
		t.Fatal(err)
	}
	rev, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if got := rev.GetState().GetRevokedSerials(); len(got) != 1 || got[0] != resp.GetSvid().GetSerial() {
		t.Fatalf("revoked serials %v, want [%s]", got, resp.GetSvid().GetSerial())
	}
	if err := e.entries.Delete(ctx, added.Id); err != nil {
		t.Fatal(err)
	}
	del, err := stream.Recv()
	if err != nil || len(del.GetState().GetEntries()) != 1 {
		t.Fatalf("after delete: %v, %v", del, err)
	}
}

func TestBundleAPIs(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	agent := e.agentClient(t, "node-a")
	resp, err := agent.GetBundle(ctx, &cav1.GetBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.GetBundle().GetX509Authorities(); len(got) != 1 || string(got[0]) != string(e.auth.Root().Raw) {
		t.Fatal("bundle does not hold the root")
	}
	stream, err := agent.WatchBundle(ctx, &cav1.WatchBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil || first.GetBundle().GetSequence() != 1 {
		t.Fatalf("first bundle %v, %v", first, err)
	}
	e.srv.SetBundle(e.auth.Bundle())
	second, err := stream.Recv()
	if err != nil || second.GetBundle().GetSequence() != 2 {
		t.Fatalf("bundle after SetBundle %v, %v; want sequence 2", second, err)
	}
	if _, err := e.anonClient(t).GetBundle(ctx, &cav1.GetBundleRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("GetBundle without client cert: %v", err)
	}
}

func TestAdminOverMTLSOnlyForAdminIDs(t *testing.T) {
	e := newEnv(t) // admin ID: spiffe://cluster.local/castellan/agent/admin-node
	ctx := context.Background()
	conn, _ := e.dial(t, e.mtlsConfig(e.attest(t, "admin-node")))
	admin := adminv1.NewAdminServiceClient(conn)
	created, err := admin.CreateEntry(ctx, &adminv1.CreateEntryRequest{Entry: &cav1.Entry{SpiffeId: appID, Node: "node-a",
		Selectors: []*cav1.Selector{{Type: "unix", Value: "uid:1000"}}}})
	if err != nil {
		t.Fatal(err)
	}
	list, err := admin.ListEntries(ctx, &adminv1.ListEntriesRequest{Node: "node-a"})
	if err != nil || len(list.GetEntries()) != 1 || list.GetEntries()[0].GetId() != created.GetEntry().GetId() {
		t.Fatalf("ListEntries: %v, %v", list, err)
	}
	conn2, _ := e.dial(t, e.mtlsConfig(e.attest(t, "node-a")))
	_, err = adminv1.NewAdminServiceClient(conn2).ListEntries(ctx, &adminv1.ListEntriesRequest{})
	if st := status.Convert(err); st.Code() != codes.PermissionDenied || !strings.Contains(st.Message(), "agent/node-a is not an admin") {
		t.Fatalf("non-admin: %v %q", st.Code(), st.Message())
	}
	_, err = adminv1.NewAdminServiceClient(e.anonConn(t)).ListEntries(ctx, &adminv1.ListEntriesRequest{})
	if st := status.Convert(err); st.Code() != codes.Unauthenticated {
		t.Fatalf("admin call without client cert: %v %q, want Unauthenticated", st.Code(), st.Message())
	}
}

func TestAdminSocket(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "admin.sock")
	lis, err := adminsock.Listen(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	g := e.srv.AdminGRPCServer()
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	admin := adminv1.NewAdminServiceClient(conn)
	ctx := context.Background()
	tok, err := admin.CreateJoinToken(ctx, &adminv1.CreateJoinTokenRequest{Node: "node-z", TtlSeconds: 60})
	if err != nil {
		t.Fatal(err)
	}
	if use, err := e.tokens.Consume(ctx, tok.GetToken()); err != nil || use.Node != "node-z" {
		t.Fatalf("token from the admin socket: %+v, %v", use, err)
	}
	if _, err := admin.CreateJoinToken(ctx, &adminv1.CreateJoinTokenRequest{Node: "Bad Node"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("bad node name: %v", err)
	}
	if _, err := admin.DeleteEntry(ctx, &adminv1.DeleteEntryRequest{Id: "nope"}); status.Code(err) != codes.NotFound {
		t.Fatalf("delete unknown entry: %v", err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin socket mode %v, %v; want 0600", fi.Mode().Perm(), err)
	}
}

func TestTokenSingleUseUnderConcurrency(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	token, _, err := e.tokens.Create(ctx, "node-a", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	anon := e.anonClient(t)
	const n = 8
	errs := make(chan error, n)
	for range n {
		go func() {
			_, err := anon.AttestAgent(ctx, joinReq(token, agentCSR(t, ecKey(t, elliptic.P256()))))
			errs <- err
		}()
	}
	won := 0
	for range n {
		err := <-errs
		switch {
		case err == nil:
			won++
		case status.Code(err) != codes.Unauthenticated:
			t.Errorf("loser got %v, want Unauthenticated", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d attestations succeeded with one token, want exactly 1", won)
	}
}

func TestSerialFormatMatchesLedger(t *testing.T) {
	for _, n := range []int64{0x0abc, 0x1000, 1} {
		s := serial.FromBig(big.NewInt(n)).String()
		norm, err := entry.NormalizeSerial(s)
		if err != nil || norm != s || strings.HasPrefix(s, "0") {
			t.Errorf("serial %#x as %q; the ledger normalizes it to %q (%v)", n, s, norm, err)
		}
	}
}

func TestShutdownEndsStreamsPromptly(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := e.agentClient(t, "node-a").SyncAgent(ctx, &cav1.SyncAgentRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	e.srv.Shutdown(ctx)
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Shutdown took %s with an open SyncAgent stream", d)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable {
		t.Fatalf("stream after shutdown: %v, want Unavailable", err)
	}
}
