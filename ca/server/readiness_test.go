package server

import (
	"context"
	"crypto/elliptic"
	"strings"
	"testing"
	"time"

	adminv1 "github.com/castellan-dev/castellan/api/castellan/admin/v1"
	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/ca/server/edge"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// waitHealth reads the health Watch stream until it reports want.
func waitHealth(t *testing.T, w healthpb.Health_WatchClient, want healthpb.HealthCheckResponse_ServingStatus) {
	t.Helper()
	for {
		resp, err := w.Recv()
		if err != nil {
			t.Fatalf("health watch ended waiting for %s: %v", want, err)
		}
		if resp.GetStatus() == want {
			return
		}
	}
}

// wantUnavailable checks that err is Unavailable and says the datastore
// is the cause.
func wantUnavailable(t *testing.T, what string, err error) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "datastore") {
		t.Errorf("%s while the store is down: %v %q, want Unavailable naming the datastore", what, st.Code(), st.Message())
	}
}

// TestStoreOutageMakesServerNotReadyButKeepsStreams: while the registry
// store fails its pings the server is not ready (gRPC health), calls that
// need the store fail with Unavailable (never as a refusal decided on a
// failed read: the join token is not spent, the entry is not "not
// found"), and the agents' SyncAgent streams stay open and carry the next
// change once the store is back.
func TestStoreOutageMakesServerNotReadyButKeepsStreams(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	e.monitorReadiness(t, ctx, 10*time.Millisecond)
	health, err := healthpb.NewHealthClient(e.anonConn(t)).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	waitHealth(t, health, healthpb.HealthCheckResponse_SERVING)

	ent := e.addEntry(t, appID, "node-a")
	stream, err := e.agentClient(t, "node-a").SyncAgent(ctx, &cav1.SyncAgentRequest{})
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
	conn, _ := e.dial(t, e.mtlsConfig(e.attest(t, "admin-node")))
	admin := adminv1.NewAdminServiceClient(conn)

	e.registry.Fail(true)
	waitHealth(t, health, healthpb.HealthCheckResponse_NOT_SERVING)
	attest := func() error {
		_, err := e.anonClient(t).AttestAgent(ctx, &cav1.AttestAgentRequest{
			Attestation: &cav1.AttestAgentRequest_JoinToken{JoinToken: token}, Csr: agentCSR(t, ecKey(t, elliptic.P256()))})
		return err
	}
	wantUnavailable(t, "AttestAgent", attest())
	_, err = admin.CreateJoinToken(ctx, &adminv1.CreateJoinTokenRequest{Node: "node-c"})
	wantUnavailable(t, "CreateJoinToken", err)
	_, err = admin.CreateEntry(ctx, &adminv1.CreateEntryRequest{Entry: &cav1.Entry{SpiffeId: "spiffe://cluster.local/ns/x/sa/y",
		Node: "node-a", Selectors: []*cav1.Selector{{Type: "unix", Value: "uid:7"}}}})
	wantUnavailable(t, "CreateEntry", err)
	_, err = admin.DeleteEntry(ctx, &adminv1.DeleteEntryRequest{Id: ent.Id})
	wantUnavailable(t, "DeleteEntry", err)
	if n := e.csrCount(edge.ResultError, edge.ReasonStoreUnavailable); n != 1 {
		t.Errorf("castellan_csr_total{result=error,reason=store_unavailable} = %v, want 1 (the attestation)", n)
	}

	e.registry.Fail(false)
	waitHealth(t, health, healthpb.HealthCheckResponse_SERVING)
	if err := attest(); err != nil {
		t.Fatalf("AttestAgent with the token tried during the outage: %v; the token must not have been spent", err)
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
