package server

import (
	"context"
	"crypto/elliptic"
	"crypto/x509"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	adminv1 "github.com/castellan-dev/castellan/api/castellan/admin/v1"
	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/ca/ledger"
	"github.com/castellan-dev/castellan/ca/server/edge"
	"github.com/castellan-dev/castellan/internal/serial"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const banApp = "spiffe://cluster.local/ns/it/sa/app"

// shortAgentTTL makes agent SVIDs reach half-life a few seconds after they
// are issued (NotBefore is backdated by 30s), so that the fake clock can
// move there while real TLS still accepts every certificate.
func shortAgentTTL(c *Config) { c.AgentTTL = 40 * time.Second }

// toHalfLife moves the clock to the half-life of svid's leaf.
func (e *env) toHalfLife(leaf *x509.Certificate) {
	e.clock.Add(earliestRenewal(leaf).Sub(e.clock.Now()))
}

// recvState waits for the next SyncAgent state (bounded by the test's
// context) and returns it, or the stream's error.
func recvState(t *testing.T, stream cav1.CertificateAuthorityService_SyncAgentClient) (*cav1.AgentState, error) {
	t.Helper()
	resp, err := stream.Recv()
	return resp.GetState(), err
}

func TestAgentRenewalBeforeHalfLifeIsRefused(t *testing.T) {
	e := newEnv(t, shortAgentTTL)
	ctx := context.Background()
	agent := e.attest(t, "node-a")
	_, c := e.dial(t, e.mtlsConfig(agent))
	key := ecKey(t, elliptic.P256())
	half := earliestRenewal(agent.Certificates[0])
	e.clock.Add(half.Sub(e.clock.Now()) - time.Second)
	_, err := c.RenewAgent(ctx, &cav1.RenewAgentRequest{Csr: agentCSR(t, key)})
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), half.UTC().Format(time.RFC3339)) {
		t.Fatalf("renewal 1s before half-life: %v, want ResourceExhausted naming %s", err, half.UTC().Format(time.RFC3339))
	}
	if got := e.csrCount(edge.ResultRefused, reasonRenewTooEarly); got != 1 {
		t.Errorf("castellan_csr_total{reason=%q} = %v, want 1", reasonRenewTooEarly, got)
	}
	e.clock.Add(time.Second)
	resp, err := c.RenewAgent(ctx, &cav1.RenewAgentRequest{Csr: agentCSR(t, key)})
	if err != nil {
		t.Fatalf("renewal at half-life: %v", err)
	}
	rec, err := e.ledger.Get(ctx, resp.GetSvid().GetSerial())
	if err != nil || rec.Parent != serial.FromBig(agent.Certificates[0].SerialNumber).String() {
		t.Fatalf("renewal recorded with parent %q (%v), want the caller's serial", rec.Parent, err)
	}
	// One more renewal of the same certificate (an agent that lost the
	// answer) is allowed; a third means two holders: refused.
	if _, err := c.RenewAgent(ctx, &cav1.RenewAgentRequest{Csr: agentCSR(t, key)}); err != nil {
		t.Fatalf("second renewal of one certificate: %v", err)
	}
	_, err = c.RenewAgent(ctx, &cav1.RenewAgentRequest{Csr: agentCSR(t, key)})
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "already renewed 2 times") ||
		!strings.Contains(err.Error(), "castellanctl agent ban node-a") {
		t.Fatalf("third renewal of one certificate: %v, want ResourceExhausted suggesting a ban", err)
	}
	// The renewed certificate starts its own half-life.
	renewed := svidOf(t, resp.GetSvid(), key)
	_, c2 := e.dial(t, e.mtlsConfig(renewed))
	if _, err := c2.RenewAgent(ctx, &cav1.RenewAgentRequest{Csr: agentCSR(t, key)}); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("renewing the fresh certificate at once: %v, want ResourceExhausted", err)
	}
}

// TestBannedNodeIsCutOff: a ban refuses every agent certificate of the
// node (the original and a renewal that a thief holds), closes its
// SyncAgent stream, refuses attestation with a new token, revokes every
// certificate issued to the node and pushes those serials to other agents.
// It survives a restart of the ledger; an unban allows new issuance only.
func TestBannedNodeIsCutOff(t *testing.T) {
	e := newEnv(t, shortAgentTTL)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e.addEntry(t, banApp, "node-a")
	original := e.attest(t, "node-a")
	_, orig := e.dial(t, e.mtlsConfig(original))
	key := ecKey(t, elliptic.P256())
	wl, err := orig.SignX509SVID(ctx, &cav1.SignX509SVIDRequest{Csr: workloadCSR(t, key, banApp)})
	if err != nil {
		t.Fatal(err)
	}
	e.toHalfLife(original.Certificates[0])
	resp, err := orig.RenewAgent(ctx, &cav1.RenewAgentRequest{Csr: agentCSR(t, key)})
	if err != nil {
		t.Fatal(err)
	}
	_, stolen := e.dial(t, e.mtlsConfig(svidOf(t, resp.GetSvid(), key)))
	aStream, err := stolen.SyncAgent(ctx, &cav1.SyncAgentRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := recvState(t, aStream); err != nil {
		t.Fatal(err)
	}
	watch, err := stolen.WatchBundle(ctx, &cav1.WatchBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Recv(); err != nil {
		t.Fatal(err)
	}
	_, other := e.dial(t, e.mtlsConfig(e.attest(t, "node-b")))
	bStream, err := other.SyncAgent(ctx, &cav1.SyncAgentRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := recvState(t, bStream); err != nil || len(st.GetRevokedSerials()) != 0 {
		t.Fatalf("node-b's first state %v, %v; want no revoked serials", st, err)
	}

	adm := e.admin()
	ban, err := adm.BanAgent(ctx, &adminv1.BanAgentRequest{Node: "node-a", Reason: "agent key stolen"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{serial.FromBig(original.Certificates[0].SerialNumber).String(), resp.GetSvid().GetSerial(), wl.GetSvid().GetSerial()}
	for _, s := range want {
		if !slices.Contains(ban.GetRevokedSerials(), s) {
			t.Errorf("ban revoked %v; %s missing", ban.GetRevokedSerials(), s)
		}
	}
	if !ban.GetAgent().GetBanned() || ban.GetAgent().GetBanReason() != "agent key stolen" {
		t.Errorf("ban answer %v", ban.GetAgent())
	}

	// The node's open stream ends with the ban.
	if _, err := recvState(t, aStream); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), `node "node-a" is banned`) {
		t.Fatalf("node-a's SyncAgent after the ban: %v, want PermissionDenied naming the ban", err)
	}
	if _, err := watch.Recv(); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("node-a's WatchBundle after the ban: %v, want PermissionDenied", err)
	}
	// Node-b is pushed the revoked serials.
	st, err := recvState(t, bStream)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range want {
		if !slices.Contains(st.GetRevokedSerials(), s) {
			t.Errorf("node-b was pushed %v; %s missing", st.GetRevokedSerials(), s)
		}
	}
	// Every credential of node-a is refused on every call.
	wantBanned := func(what string, err error) {
		t.Helper()
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "agent key stolen") {
			t.Errorf("%s after the ban: %v, want PermissionDenied naming the ban", what, err)
		}
	}
	for _, c := range []cav1.CertificateAuthorityServiceClient{orig, stolen} {
		_, err := c.RenewAgent(ctx, &cav1.RenewAgentRequest{Csr: agentCSR(t, key)})
		wantBanned("RenewAgent", err)
		_, err = c.SignX509SVID(ctx, &cav1.SignX509SVIDRequest{Csr: workloadCSR(t, key, banApp)})
		wantBanned("SignX509SVID", err)
		_, err = c.GetBundle(ctx, &cav1.GetBundleRequest{})
		wantBanned("GetBundle", err)
	}
	token, _, err := e.tokens.Create(ctx, "node-a", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.anonClient(t).AttestAgent(ctx, &cav1.AttestAgentRequest{
		Attestation: &cav1.AttestAgentRequest_JoinToken{JoinToken: token}, Csr: agentCSR(t, key)})
	wantBanned("AttestAgent with a new join token", err)
	if _, err := other.GetBundle(ctx, &cav1.GetBundleRequest{}); err != nil {
		t.Errorf("node-b after node-a's ban: %v", err)
	}
	if _, err := adm.BanAgent(ctx, &adminv1.BanAgentRequest{Node: "node-a", Reason: "again"}); status.Code(err) != codes.AlreadyExists {
		t.Errorf("second ban: %v, want AlreadyExists", err)
	}

	// Unban: new issuance works again; the revoked certificates stay revoked.
	if _, err := adm.UnbanAgent(ctx, &adminv1.UnbanAgentRequest{Node: "node-a", Reason: "re-imaged"}); err != nil {
		t.Fatal(err)
	}
	if _, err := adm.UnbanAgent(ctx, &adminv1.UnbanAgentRequest{Node: "node-a", Reason: "again"}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("second unban: %v, want FailedPrecondition", err)
	}
	if _, err := orig.GetBundle(ctx, &cav1.GetBundleRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("the original agent certificate after the unban: %v, want Unauthenticated (still revoked)", err)
	}
	e.attest(t, "node-a")
}

func TestBanSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ledger.db")
	ctx := context.Background()
	led, err := ledger.Open(path, ledger.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := led.Ban(ctx, "node-a", "stolen"); err != nil {
		t.Fatal(err)
	}
	if err := led.Close(); err != nil {
		t.Fatal(err)
	}
	led, err = ledger.Open(path, ledger.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer led.Close()
	b, ok := led.Banned("node-a")
	if !ok || b.Reason != "stolen" {
		t.Fatalf("after reopening: banned %v %+v, want the ban", ok, b)
	}
	agents, err := led.Agents(ctx)
	if err != nil || len(agents) != 1 || agents[0].Ban == nil {
		t.Fatalf("Agents after reopening = %+v, %v", agents, err)
	}
}

// TestBanRacingIssuanceLeavesNothingValid: agents of node-a issue SVIDs as
// fast as they can while the node is banned; when the dust settles, every
// certificate the ledger holds for node-a is revoked, and every call after
// the ban returned is refused.
func TestBanRacingIssuanceLeavesNothingValid(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	e.addEntry(t, banApp, "node-a")
	_, c := e.dial(t, e.mtlsConfig(e.attest(t, "node-a")))
	key := ecKey(t, elliptic.P256())
	csr := workloadCSR(t, key, banApp)
	started := make(chan struct{}, 64)
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			for i := 0; i < 2000; i++ { // bounded; ends at the first refusal after the ban
				_, err := c.SignX509SVID(ctx, &cav1.SignX509SVIDRequest{Csr: csr})
				select {
				case started <- struct{}{}:
				default:
				}
				if err != nil {
					// The ban takes effect when its append commits,
					// possibly before BanAgent returns.
					if status.Code(err) == codes.PermissionDenied && strings.Contains(err.Error(), "is banned") {
						err = nil
					}
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 20 {
		<-started
	}
	if _, err := e.admin().BanAgent(ctx, &adminv1.BanAgentRequest{Node: "node-a", Reason: "race"}); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatalf("issuer: %v", err)
		}
	}
	certs, err := e.ledger.NodeCertificates(ctx, "node-a", e.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(certs) != 0 {
		t.Fatalf("%d certificates of node-a are still valid after the ban: %v", len(certs), certs[0].Serial)
	}
	if _, err := c.SignX509SVID(ctx, &cav1.SignX509SVIDRequest{Csr: csr}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("after the ban: %v", err)
	}
}
