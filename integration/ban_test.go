package integration_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// banAgentTTL is the agent SVID lifetime of these tests. NotBefore is
// backdated by 30s, so an agent SVID reaches half its lifetime (and may be
// renewed) 5s after it is issued.
const banAgentTTL = 40 * time.Second

var banTD = spiffeid.RequireTrustDomainFromString("cluster.local")

// startBanServer starts castellan-server with its JSON log in logPath and
// extra flags.
func (r *agentRig) startBanServer(logPath string, extra ...string) {
	r.t.Helper()
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { _ = f.Close() })
	args := append([]string{"--data-dir", r.srvDir, "--listen", r.listen, "--http-listen", r.srvHTTP,
		"--default-ttl", "10m", "--agent-ttl", banAgentTTL.String()}, extra...)
	cmd := exec.Command(r.server, args...)
	cmd.Stderr = f
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.srvCmd = cmd
	r.t.Cleanup(func() { r.stop(cmd) })
	agentEventually(r.t, 20*time.Second, "the CA's readiness", func() bool {
		_, err := os.Stat(filepath.Join(r.srvDir, "admin.sock"))
		return err == nil && r.caReady()
	})
}

// caReady reports whether the CA answers /readyz.
func (r *agentRig) caReady() bool {
	resp, err := http.Get("http://" + r.srvHTTP + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// extraAgent starts a second castellan-agent for node with its own data
// directory, socket and port, and returns its data directory.
func (r *agentRig) extraAgent(node string) string {
	r.t.Helper()
	dir := filepath.Join(r.t.TempDir(), node)
	token := strings.Fields(r.ctlRun("token", "create", "--node", node, "--ttl", "10m"))[0]
	cmd := exec.Command(r.agent, "--server-address", r.listen, "--trust-bundle", filepath.Join(r.srvDir, "bundle.pem"),
		"--data-dir", dir, "--socket", filepath.Join(dir, "agent.sock"), "--http-listen", freeAddr(r.t))
	cmd.Env = append(os.Environ(), "CASTELLAN_AGENT_JOIN_TOKEN="+token)
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { r.stop(cmd) })
	agentEventually(r.t, 20*time.Second, node+"'s agent SVID", func() bool {
		_, err := os.Stat(filepath.Join(dir, "agent.pem"))
		return err == nil
	})
	return dir
}

// stealAgentSVID copies an agent's SVID and key out of its data directory,
// as a thief with read access to the node's disk would.
func stealAgentSVID(t *testing.T, dataDir string) *x509svid.SVID {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dataDir, "agent.pem"))
	if err != nil {
		t.Fatal(err)
	}
	var certs, key []byte
	for rest := data; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			certs = append(certs, pem.EncodeToMemory(b)...)
		} else {
			key = pem.EncodeToMemory(b)
		}
	}
	svid, err := x509svid.Parse(certs, key)
	if err != nil {
		t.Fatalf("parse the stolen agent SVID: %v", err)
	}
	return svid
}

// caClient dials the CA presenting svid (nil: no client certificate).
func (r *agentRig) caClient(t *testing.T, svid *x509svid.SVID) cav1.CertificateAuthorityServiceClient {
	t.Helper()
	bundle, err := x509bundle.Load(banTD, filepath.Join(r.srvDir, "bundle.pem"))
	if err != nil {
		t.Fatal(err)
	}
	serverID := spiffeid.RequireFromPath(banTD, "/castellan/server")
	tc := tlsconfig.TLSClientConfig(bundle, tlsconfig.AuthorizeID(serverID))
	if svid != nil {
		tc = tlsconfig.MTLSClientConfig(svid, bundle, tlsconfig.AuthorizeID(serverID))
	}
	conn, err := grpc.NewClient(r.listen, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return cav1.NewCertificateAuthorityServiceClient(conn)
}

// agentCSR returns a key and an agent CSR (no SAN).
func agentCSR(t *testing.T) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	return key, der
}

// svidFrom builds an SVID from a CA response and its key.
func svidFrom(t *testing.T, pb *cav1.X509SVID, key *ecdsa.PrivateKey) *x509svid.SVID {
	t.Helper()
	var chain []*x509.Certificate
	for _, der := range pb.GetCertChain() {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, c)
	}
	id, err := spiffeid.FromString(pb.GetSpiffeId())
	if err != nil {
		t.Fatal(err)
	}
	return &x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key}
}

// renewWhenAllowed renews an agent SVID with c in a loop, as a thief
// would, until the CA accepts (bounded); every refusal before must be the
// half-life rule. It returns the new SVID and the refusals seen.
func renewWhenAllowed(t *testing.T, c cav1.CertificateAuthorityServiceClient) (*x509svid.SVID, []error) {
	t.Helper()
	var refused []error
	deadline := time.Now().Add(3 * banAgentTTL)
	for attempt := 0; attempt < 500 && time.Now().Before(deadline); attempt++ {
		key, csr := agentCSR(t)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		resp, err := c.RenewAgent(ctx, &cav1.RenewAgentRequest{Csr: csr})
		cancel()
		if err == nil {
			return svidFrom(t, resp.GetSvid(), key), refused
		}
		if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "may be renewed from") {
			t.Fatalf("renewal refused with %v; want ResourceExhausted naming the earliest renewal time", err)
		}
		refused = append(refused, err)
		time.Sleep(200 * time.Millisecond) // poll: the next attempt checks again
	}
	t.Fatalf("no renewal accepted within %v (%d refusals)", 3*banAgentTTL, len(refused))
	return nil, nil
}

func serialHex(c *x509.Certificate) string { return fmt.Sprintf("%x", c.SerialNumber) }

// TestBanCutsOffAStolenAgentCredential: a thief copies node-a's agent key
// and certificate from the agent's data directory and renews with them in
// a loop (refused until half-life, then granted once). The operator bans
// node-a with `castellanctl agent ban`. From then on every call with any
// credential of node-a (the agent's, the stolen one, the thief's renewal)
// is refused with PermissionDenied naming the ban, the agent's and the
// thief's SyncAgent streams are closed, attestation with a new join token
// is refused, node-a's workload and agent serials are in GET /crl and
// pushed to node-b's agent as revoked, the ban is in the ledger (which
// still verifies) and in `agent list -o json`, and all of it survives a
// restart of the CA. An unban lets the node attest again.
func TestBanCutsOffAStolenAgentCredential(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real binaries")
	}
	r := newAgentRig(t)
	srvLog := filepath.Join(t.TempDir(), "server.log")
	r.startBanServer(srvLog)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	want := spiffeid.RequireFromString("spiffe://cluster.local/ns/it/sa/ban-test")
	r.ctlRun("entry", "create", "--spiffe-id", want.String(), "--node", "node-a",
		"--selector", "unix:path:"+self, "--selector", fmt.Sprintf("unix:uid:%d", os.Getuid()))
	r.startAgent(strings.Fields(r.ctlRun("token", "create", "--node", "node-a", "--ttl", "10m"))[0])
	agentEventually(t, 20*time.Second, "node-a's agent socket", func() bool { _, err := os.Stat(r.sock); return err == nil })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// The socket exists before the first SVID is cached: until then the
	// agent answers PermissionDenied ("no identity issued").
	var x509ctx *workloadapi.X509Context
	agentEventually(t, 30*time.Second, "the workload SVID from node-a's agent", func() bool {
		wctx, wcancel := context.WithTimeout(ctx, 2*time.Second)
		defer wcancel()
		var err error
		x509ctx, err = workloadapi.FetchX509Context(wctx, workloadapi.WithAddr("unix://"+r.sock))
		return err == nil
	})
	workloadSerial := serialHex(agentVerify(t, x509ctx, want).Certificates[0])

	// The thief copies the agent's files and renews in a loop.
	stolen := stealAgentSVID(t, r.agentDir)
	thief := r.caClient(t, stolen)
	renewed, refusals := renewWhenAllowed(t, thief)
	if len(refusals) == 0 {
		t.Fatal("the thief's first renewal was accepted at once; want refusals until half-life")
	}
	t.Logf("thief: %d renewals refused before half-life (%v), then got serial %s",
		len(refusals), refusals[0], serialHex(renewed.Certificates[0]))
	thief2 := r.caClient(t, renewed)
	thiefStream, err := thief2.SyncAgent(ctx, &cav1.SyncAgentRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := thiefStream.Recv(); err != nil {
		t.Fatal(err)
	}

	// Node-b's agent, whose pushes the test reads with node-b's credential.
	bDir := r.extraAgent("node-b")
	bStream, err := r.caClient(t, stealAgentSVID(t, bDir)).SyncAgent(ctx, &cav1.SyncAgentRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bStream.Recv(); err != nil {
		t.Fatal(err)
	}

	// The operator bans node-a.
	var ban struct {
		Node      string   `json:"node"`
		Banned    bool     `json:"banned"`
		BanReason string   `json:"ban_reason"`
		Revoked   []string `json:"revoked_serials"`
	}
	out := r.ctlRun("agent", "ban", "node-a", "--reason", "agent key stolen", "-o", "json")
	if err := json.Unmarshal([]byte(out), &ban); err != nil || !ban.Banned || ban.BanReason != "agent key stolen" {
		t.Fatalf("agent ban -o json = %s (%v)", out, err)
	}
	mustRevoke := []string{workloadSerial, serialHex(stolen.Certificates[0]), serialHex(renewed.Certificates[0])}
	for _, s := range mustRevoke {
		if !slices.Contains(ban.Revoked, s) {
			t.Fatalf("the ban revoked %v; %s missing", ban.Revoked, s)
		}
	}

	// The thief's stream is closed with the ban; so is the agent's.
	if _, err := thiefStream.Recv(); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), `node "node-a" is banned`) {
		t.Fatalf("the thief's SyncAgent after the ban: %v, want PermissionDenied naming the ban", err)
	}
	agentEventually(t, 10*time.Second, "node-a's agent to see its sync stream closed by the ban", func() bool {
		return strings.Contains(r.agentLog.String(), "is banned")
	})
	// Node-b is pushed node-a's serials as revoked.
	pushed := map[string]bool{}
	for !subset(mustRevoke, pushed) {
		resp, err := bStream.Recv()
		if err != nil {
			t.Fatalf("node-b's stream: %v (pushed so far %v)", err, pushed)
		}
		for _, s := range resp.GetState().GetRevokedSerials() {
			pushed[s] = true
		}
	}
	// Every credential of node-a is refused, with the message a user sees.
	current := stealAgentSVID(t, r.agentDir) // whatever the agent holds now
	checkBanned := func(when string) {
		t.Helper()
		checked := 0
		for name, svid := range map[string]*x509svid.SVID{"stolen": stolen, "thief's renewal": renewed, "agent's current": current} {
			if !time.Now().Add(2 * time.Second).Before(svid.Certificates[0].NotAfter) {
				t.Logf("%s: the %s credential has expired; TLS refuses it before the CA could", when, name)
				continue
			}
			checked++
			c := r.caClient(t, svid)
			_, csr := agentCSR(t)
			_, err := c.RenewAgent(ctx, &cav1.RenewAgentRequest{Csr: csr})
			if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), `node "node-a" is banned`) ||
				!strings.Contains(err.Error(), "agent key stolen") {
				t.Fatalf("%s: RenewAgent with the %s credential: %v, want PermissionDenied naming the ban", when, name, err)
			}
			if _, err := c.GetBundle(ctx, &cav1.GetBundleRequest{}); status.Code(err) != codes.PermissionDenied {
				t.Fatalf("%s: GetBundle with the %s credential: %v, want PermissionDenied", when, name, err)
			}
		}
		if checked == 0 {
			t.Fatalf("%s: every credential of node-a expired before it could be checked (machine too slow?)", when)
		}
		t.Logf("%s: a user sees: %v", when, status.Convert(func() error {
			_, err := r.caClient(t, renewed).GetBundle(ctx, &cav1.GetBundleRequest{})
			return err
		}()).Message())
		// A new join token for node-a does not help.
		token := strings.Fields(r.ctlRun("token", "create", "--node", "node-a", "--ttl", "10m"))[0]
		_, csr := agentCSR(t)
		_, err := r.caClient(t, nil).AttestAgent(ctx, &cav1.AttestAgentRequest{
			Attestation: &cav1.AttestAgentRequest_JoinToken{JoinToken: token}, Csr: csr})
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "banned") {
			t.Fatalf("%s: AttestAgent for node-a with a new join token: %v, want PermissionDenied", when, err)
		}
	}
	checkBanned("after the ban")

	// The CRL lists node-a's serials.
	crl := fetchCRL(t, "http://"+r.srvHTTP+"/crl")
	listed := map[string]bool{}
	for _, e := range crl.RevokedCertificateEntries {
		listed[serialOf(e.SerialNumber)] = true
	}
	if !subset(mustRevoke, listed) {
		t.Fatalf("GET /crl lists %v; want %v among them", listed, mustRevoke)
	}
	checkLedgerBan(t, r)

	// A restart keeps the ban.
	r.stop(r.srvCmd)
	r.startBanServer(srvLog)
	checkBanned("after a restart")
	checkLedgerBan(t, r)

	// An unban lets node-a attest again; the revoked certificates stay revoked.
	r.ctlRun("agent", "unban", "node-a", "--reason", "node re-imaged")
	token := strings.Fields(r.ctlRun("token", "create", "--node", "node-a", "--ttl", "10m"))[0]
	_, csr := agentCSR(t)
	if _, err := r.caClient(t, nil).AttestAgent(ctx, &cav1.AttestAgentRequest{
		Attestation: &cav1.AttestAgentRequest_JoinToken{JoinToken: token}, Csr: csr}); err != nil {
		t.Fatalf("AttestAgent after the unban: %v", err)
	}
	if _, err := r.caClient(t, renewed).GetBundle(ctx, &cav1.GetBundleRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("the thief's certificate after the unban: %v, want Unauthenticated (still revoked)", err)
	}
}

// checkLedgerBan checks that the ban is in the ledger, which verifies, and
// in `agent list -o json`.
func checkLedgerBan(t *testing.T, r *agentRig) {
	t.Helper()
	found := false
	for _, line := range strings.Split(r.ctlRun("ledger", "export"), "\n") {
		var e struct{ Kind, Node, Reason string }
		if json.Unmarshal([]byte(line), &e) == nil && e.Kind == "ban" && e.Node == "node-a" && e.Reason == "agent key stolen" {
			found = true
		}
	}
	if !found {
		t.Fatal("ledger export has no ban event for node-a")
	}
	if v := r.ctlRun("ledger", "verify"); !strings.HasPrefix(v, "OK:") {
		t.Fatalf("ledger verify: %s", v)
	}
	var agents []struct {
		Node      string `json:"node"`
		Banned    bool   `json:"banned"`
		BanReason string `json:"ban_reason"`
	}
	if err := json.Unmarshal([]byte(r.ctlRun("agent", "list", "-o", "json")), &agents); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, a := range agents {
		got[a.Node] = a.Banned
		if a.Node == "node-a" && a.BanReason != "agent key stolen" {
			t.Errorf("agent list: node-a ban reason %q", a.BanReason)
		}
	}
	if !got["node-a"] || got["node-b"] {
		t.Fatalf("agent list -o json: banned %v, want node-a banned and node-b not", got)
	}
}

func subset(want []string, have map[string]bool) bool {
	for _, s := range want {
		if !have[s] {
			return false
		}
	}
	return true
}

// TestCertsRevokeWithDescendants: an agent credential renewed three times
// is revoked with its whole lineage by `castellanctl certs revoke
// --with-descendants`, in one ledger append; `certs show` walks the
// lineage; every generation is then refused and listed in the CRL.
func TestCertsRevokeWithDescendants(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real binaries")
	}
	r := newAgentRig(t)
	r.startBanServer(filepath.Join(t.TempDir(), "server.log"))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	token := strings.Fields(r.ctlRun("token", "create", "--node", "node-l", "--ttl", "10m"))[0]
	key, csr := agentCSR(t)
	resp, err := r.caClient(t, nil).AttestAgent(ctx, &cav1.AttestAgentRequest{
		Attestation: &cav1.AttestAgentRequest_JoinToken{JoinToken: token}, Csr: csr})
	if err != nil {
		t.Fatal(err)
	}
	chain := []*x509svid.SVID{svidFrom(t, resp.GetSvid(), key)}
	for range 3 {
		next, _ := renewWhenAllowed(t, r.caClient(t, chain[len(chain)-1]))
		chain = append(chain, next)
	}
	var serials []string
	for _, s := range chain {
		serials = append(serials, serialHex(s.Certificates[0]))
	}

	var shown struct {
		ParentSerial string                    `json:"parent_serial"`
		Ancestors    []struct{ Serial string } `json:"ancestors"`
		Descendants  []struct{ Serial string } `json:"descendants"`
	}
	if err := json.Unmarshal([]byte(r.ctlRun("certs", "show", serials[1], "-o", "json")), &shown); err != nil {
		t.Fatal(err)
	}
	if shown.ParentSerial != serials[0] || len(shown.Ancestors) != 1 || shown.Ancestors[0].Serial != serials[0] ||
		len(shown.Descendants) != 2 || shown.Descendants[0].Serial != serials[2] || shown.Descendants[1].Serial != serials[3] {
		t.Fatalf("certs show %s -o json = %+v; want parent %s and descendants %v", serials[1], shown, serials[0], serials[2:])
	}
	if table := r.ctlRun("certs", "show", serials[3]); !strings.Contains(table, "ancestor -3") || !strings.Contains(table, serials[0]) {
		t.Fatalf("certs show table does not walk the lineage:\n%s", table)
	}

	var revs struct {
		Revocations []struct {
			Serial      string `json:"serial"`
			LedgerIndex uint64 `json:"ledger_index"`
		} `json:"revocations"`
	}
	out := r.ctlRun("certs", "revoke", serials[0], "--reason", "keyCompromise", "--with-descendants", "-o", "json")
	if err := json.Unmarshal([]byte(out), &revs); err != nil || len(revs.Revocations) != 4 {
		t.Fatalf("certs revoke --with-descendants -o json = %s (%v); want 4 revocations", out, err)
	}
	for i, rv := range revs.Revocations {
		if rv.Serial != serials[i] || rv.LedgerIndex != revs.Revocations[0].LedgerIndex+uint64(i) {
			t.Fatalf("revocation %d = %+v; want %s at consecutive ledger indexes (one append)", i, rv, serials[i])
		}
	}
	crl := fetchCRL(t, "http://"+r.srvHTTP+"/crl")
	listed := map[string]bool{}
	for _, e := range crl.RevokedCertificateEntries {
		listed[serialOf(e.SerialNumber)] = true
	}
	if !subset(serials, listed) {
		t.Fatalf("GET /crl lists %v, want all of %v", listed, serials)
	}
	for i, s := range chain {
		if _, err := r.caClient(t, s).GetBundle(ctx, &cav1.GetBundleRequest{}); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("generation %d after the revocation: %v, want Unauthenticated", i, err)
		}
	}
	if v := r.ctlRun("ledger", "verify"); !strings.HasPrefix(v, "OK:") {
		t.Fatalf("ledger verify: %s", v)
	}
}
