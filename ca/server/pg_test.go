package server

import (
	"context"
	"crypto/elliptic"
	"testing"
	"time"

	adminv1 "github.com/castellan-dev/castellan/api/castellan/admin/v1"
	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/ca/store/faultstore"
	"github.com/castellan-dev/castellan/ca/store/pgstore"
	"github.com/castellan-dev/castellan/internal/pgtest"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// TestPostgresOutageMakesServerNotReady: the registry and the ledger in a
// real PostgreSQL that is killed (SIGKILL, as a crash) and restarted.
// While it is down the server is not ready, issuance, attestation and
// admin writes fail with Unavailable, and the agents' SyncAgent streams
// stay open; once it is back the server is ready again without a restart,
// issues again, the join token tried during the outage still works, and
// the stream carries the next change.
func TestPostgresOutageMakesServerNotReady(t *testing.T) {
	pg := pgtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	conn, err := pgstore.Connect(ctx, pg.NewDatabase(t), pgstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	db, err := conn.Keyspace(ctx, "registry")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	ledgerDB, err := conn.Keyspace(ctx, "ledger")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ledgerDB.Close() })
	e := newEnvOn(t, faultstore.Wrap(db, true), ledgerDB, "")
	e.monitorReadiness(t, ctx, 200*time.Millisecond)
	health, err := healthpb.NewHealthClient(e.anonConn(t)).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	waitHealth(t, health, healthpb.HealthCheckResponse_SERVING)

	e.addEntry(t, appID, "node-a")
	agent := e.agentClient(t, "node-a")
	sign := func() error {
		_, err := agent.SignX509SVID(ctx, &cav1.SignX509SVIDRequest{Csr: workloadCSR(t, ecKey(t, elliptic.P256()), appID)})
		return err
	}
	stream, err := agent.SyncAgent(ctx, &cav1.SyncAgentRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	token, _, err := e.tokens.Create(ctx, "node-b", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	adminConn, _ := e.dial(t, e.mtlsConfig(e.attest(t, "admin-node")))
	admin := adminv1.NewAdminServiceClient(adminConn)
	attest := func() error {
		_, err := e.anonClient(t).AttestAgent(ctx, &cav1.AttestAgentRequest{
			Attestation: &cav1.AttestAgentRequest_JoinToken{JoinToken: token}, Csr: agentCSR(t, ecKey(t, elliptic.P256()))})
		return err
	}

	if err := pg.Kill(); err != nil {
		t.Fatal(err)
	}
	waitHealth(t, health, healthpb.HealthCheckResponse_NOT_SERVING)
	if err := sign(); status.Code(err) != codes.Unavailable {
		t.Errorf("SignX509SVID while PostgreSQL is down: %v, want Unavailable", err)
	}
	wantUnavailable(t, "AttestAgent", attest())
	_, err = admin.CreateEntry(ctx, &adminv1.CreateEntryRequest{Entry: &cav1.Entry{SpiffeId: "spiffe://cluster.local/ns/x/sa/y",
		Node: "node-a", Selectors: []*cav1.Selector{{Type: "unix", Value: "uid:7"}}}})
	wantUnavailable(t, "CreateEntry", err)
	_, err = admin.CreateJoinToken(ctx, &adminv1.CreateJoinTokenRequest{Node: "node-c"})
	wantUnavailable(t, "CreateJoinToken", err)

	if err := pg.Restart(); err != nil {
		t.Fatal(err)
	}
	waitHealth(t, health, healthpb.HealthCheckResponse_SERVING)
	if err := sign(); err != nil {
		t.Fatalf("SignX509SVID once PostgreSQL is back: %v", err)
	}
	if err := attest(); err != nil {
		t.Fatalf("AttestAgent with the token tried during the outage: %v; it must not have been spent", err)
	}
	e.addEntry(t, "spiffe://cluster.local/ns/default/sa/second", "node-a")
	next, err := stream.Recv()
	if err != nil {
		t.Fatalf("SyncAgent stream after the outage: %v; it must have stayed open", err)
	}
	if n := len(next.GetState().GetEntries()); n != 2 {
		t.Fatalf("SyncAgent after the outage: %d entries, want 2", n)
	}
}
