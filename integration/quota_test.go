package integration_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/integration/testbin"
	"github.com/castellan-dev/castellan/internal/boltcheck"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// quotaLog collects a process's output while it runs.
type quotaLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *quotaLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *quotaLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// quotaServer is a castellan-server started by quotaStart.
type quotaServer struct {
	*caServer
	log *quotaLog
}

// quotaStart starts castellan-server on dataDir and fixed addresses and
// waits for a log line whose msg starts with ready (the process exiting
// first fails the test).
func quotaStart(t *testing.T, dataDir, listen, httpListen, ready string, extra ...string) *quotaServer {
	t.Helper()
	var bins testbin.Builder
	t.Cleanup(bins.Cleanup)
	s := &quotaServer{caServer: &caServer{dataDir: dataDir, ctl: bins.Path(t, "castellanctl"), addr: listen,
		httpAddr: httpListen, exited: make(chan error, 1)}, log: &quotaLog{}}
	s.cmd = exec.Command(bins.Path(t, "castellan-server"), append([]string{"--trust-domain", "cluster.local",
		"--data-dir", dataDir, "--listen", listen, "--http-listen", httpListen, "--agent-ttl", "30m"}, extra...)...)
	s.cmd.Stderr = s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.exited <- s.cmd.Wait() }()
	t.Cleanup(func() {
		quotaStop(t, s.caServer)
		if t.Failed() {
			t.Logf("castellan-server log:\n%s", s.log)
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(s.log.String(), `"msg":"`+ready) {
		select {
		case err := <-s.exited:
			s.waited = true
			t.Fatalf("castellan-server exited (%v) before logging %q\n%s", err, ready, s.log)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("castellan-server did not log %q within 60s\n%s", ready, s.log)
		}
	}
	return s
}

// quotaStop stops s with SIGTERM (SIGKILL after 20s) and waits for it.
func quotaStop(t *testing.T, s *caServer) {
	t.Helper()
	if s.waited {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(20 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
		t.Errorf("castellan-server ignored SIGTERM for 20s")
	}
	s.waited = true
}

// quotaAgent attests node with a join token and returns a CA client
// authenticated with the node's agent SVID, and the trust bundle.
func quotaAgent(t *testing.T, s *caServer, node string) (cav1.CertificateAuthorityServiceClient, *x509bundle.Bundle) {
	t.Helper()
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	trust, err := x509bundle.Load(td, filepath.Join(s.dataDir, "bundle.pem"))
	if err != nil {
		t.Fatal(err)
	}
	serverID := spiffeid.RequireFromPath(td, "/castellan/server")
	token := strings.TrimSpace(s.ctlRun(t, "token", "create", "--node", node))
	anon := caDial(t, s.addr, credentials.NewTLS(tlsconfig.TLSClientConfig(trust, tlsconfig.AuthorizeID(serverID))))
	key, csr := caCSR(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	att, err := anon.AttestAgent(ctx, &cav1.AttestAgentRequest{
		Attestation: &cav1.AttestAgentRequest_JoinToken{JoinToken: token}, Csr: csr})
	if err != nil {
		t.Fatalf("AttestAgent %s: %v", node, err)
	}
	svid := caVerify(t, att.GetSvid(), key, trust, "spiffe://cluster.local/castellan/agent/"+node)
	return caDial(t, s.addr, credentials.NewTLS(tlsconfig.MTLSClientConfig(svid, trust, tlsconfig.AuthorizeID(serverID)))), trust
}

// quotaBatch sends a batch of one CSR per SPIFFE ID and returns how many
// were issued and the errors of the others.
func quotaBatch(t *testing.T, c cav1.CertificateAuthorityServiceClient, ids []string) (int, []*cav1.Error) {
	t.Helper()
	req := &cav1.BatchSignX509SVIDRequest{}
	for _, id := range ids {
		_, csr := caCSR(t, id)
		req.Requests = append(req.Requests, &cav1.SignX509SVIDRequest{Csr: csr})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := c.BatchSignX509SVID(ctx, req)
	if err != nil {
		t.Fatalf("BatchSignX509SVID: %v", err)
	}
	issued, errs := 0, []*cav1.Error(nil)
	for _, r := range res.GetResults() {
		if r.GetSvid() != nil {
			issued++
		} else {
			errs = append(errs, r.GetError())
		}
	}
	return issued, errs
}

// metricValue returns the value of the exposition line starting with
// series, or -1.
func metricValue(body, series string) float64 {
	for _, line := range strings.Split(body, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			var v float64
			if _, err := fmt.Sscan(rest, &v); err == nil {
				return v
			}
		}
	}
	return -1
}

// TestQuotaStopsAFloodFromOneNodeWhileAnotherIsServed: an agent that asks
// for certificates in a loop (BatchSignX509SVID with its own SVID) gets
// ResourceExhausted saying which quota and when to retry, once its node's
// quota is spent; another node is still served; a single identity asking
// too often hits its own quota; /metrics counts the refusals.
func TestQuotaStopsAFloodFromOneNodeWhileAnotherIsServed(t *testing.T) {
	s := caStart(t, "--quota-node-burst", "30", "--quota-node-per-hour", "60")
	var ids []string
	for i := range 10 {
		id := fmt.Sprintf("spiffe://cluster.local/ns/flood/sa/s%d", i)
		ids = append(ids, id)
		s.ctlRun(t, "entry", "create", "--spiffe-id", id, "--node", "node-flood", "--selector", "unix:uid:1000")
	}
	const calmID = "spiffe://cluster.local/ns/calm/sa/app"
	s.ctlRun(t, "entry", "create", "--spiffe-id", calmID, "--node", "node-calm", "--selector", "unix:uid:1000")
	flood, _ := quotaAgent(t, s, "node-flood")
	calm, _ := quotaAgent(t, s, "node-calm")

	issued, refused := 0, []*cav1.Error(nil)
	for i := 0; i < 20 && len(refused) == 0; i++ { // the flood: at most 200 requests
		n, errs := quotaBatch(t, flood, ids)
		issued += n
		refused = errs
	}
	if issued < 30 || issued > 31 { // burst 30, plus at most one token refilled (one a minute)
		t.Fatalf("the flooding node got %d certificates before a refusal, want the burst of 30", issued)
	}
	if len(refused) == 0 {
		t.Fatal("200 requests in a loop were never refused")
	}
	for _, e := range refused {
		if codes.Code(e.GetCode()) != codes.ResourceExhausted || !strings.Contains(e.GetMessage(), "node issuance quota exceeded for node node-flood") ||
			!strings.Contains(e.GetMessage(), "retry in") {
			t.Fatalf("refusal %v %q, want ResourceExhausted naming the node quota and when to retry", codes.Code(e.GetCode()), e.GetMessage())
		}
	}

	// Another node is served; its one identity has its own quota (8 per TTL).
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var lastSerial string
	for i := range 8 {
		_, csr := caCSR(t, calmID)
		resp, err := calm.SignX509SVID(ctx, &cav1.SignX509SVIDRequest{Csr: csr})
		if err != nil {
			t.Fatalf("node-calm request %d during the flood: %v", i, err)
		}
		lastSerial = resp.GetSvid().GetSerial()
	}
	_, csr := caCSR(t, calmID)
	_, err := calm.SignX509SVID(ctx, &cav1.SignX509SVIDRequest{Csr: csr})
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "identity issuance quota exceeded for identity") ||
		!strings.Contains(st.Message(), calmID) {
		t.Fatalf("ninth certificate for one identity: %v, want ResourceExhausted naming the identity quota", err)
	}
	t.Logf("flood refusal: %s\nidentity refusal: %s", refused[0].GetMessage(), st.Message())
	if d := st.Details(); len(d) != 1 || d[0].(*errdetails.RetryInfo).GetRetryDelay().AsDuration() <= 0 {
		t.Fatalf("refusal details %v, want a RetryInfo", d)
	}

	// A revocation refills the identity's quota: its replacement is served.
	s.ctlRun(t, "certs", "revoke", lastSerial, "--reason", "keyCompromise")
	if _, err := calm.SignX509SVID(ctx, &cav1.SignX509SVIDRequest{Csr: csr}); err != nil {
		t.Fatalf("replacement after a revocation: %v", err)
	}

	metrics := caHTTPGet(t, "http://"+s.httpAddr+"/metrics")
	if v := metricValue(metrics, `castellan_quota_refusals_total{quota="node"}`); v != float64(len(refused)) {
		t.Errorf("castellan_quota_refusals_total{quota=node} = %v, want %d", v, len(refused))
	}
	if v := metricValue(metrics, `castellan_quota_refusals_total{quota="identity"}`); v != 1 {
		t.Errorf("castellan_quota_refusals_total{quota=identity} = %v, want 1", v)
	}
	if v := metricValue(metrics, `castellan_csr_total{reason="quota_node",result="refused"}`); v != float64(len(refused)) {
		t.Errorf("castellan_csr_total{reason=quota_node} = %v, want %d", v, len(refused))
	}
}

// quotaDamage overwrites the element table of one leaf page of ledger
// entries, from the middle of the bbolt file at path outward, choosing (with
// boltcheck) a page in use, so the damage is one the server must notice.
func quotaDamage(t *testing.T, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ps := int(binary.LittleEndian.Uint32(data[16+8:]))
	n := len(data) / ps
	for n > 2 && !slices.ContainsFunc(data[(n-1)*ps:n*ps], func(b byte) bool { return b != 0 }) {
		n-- // bbolt grows the file ahead of its data: skip the unwritten tail
	}
	probe := filepath.Join(t.TempDir(), "probe.db")
	for i := range n / 2 {
		p := n/2 + i/2*(1-2*(i%2)) // the middle page, then outward
		if p < 2 || !entryLeafPage(data[p*ps:(p+1)*ps]) {
			continue
		}
		damaged := bytes.Clone(data)
		copy(damaged[p*ps+16:], bytes.Repeat([]byte{0xde, 0xad, 0xbe, 0xef}, 16))
		if err := os.WriteFile(probe, damaged, 0o600); err != nil {
			t.Fatal(err)
		}
		if errors.Is(boltcheck.Check(probe), boltcheck.ErrDamaged) {
			if err := os.WriteFile(path, damaged, 0o600); err != nil {
				t.Fatal(err)
			}
			t.Logf("damaged page %d of %d", p, n)
			return
		}
	}
	t.Fatal("no page in use found to damage")
}

// entryLeafPage reports whether page is a bbolt leaf page (flags 0x02 at
// offset 8 of its header) holding ledger entries: damage there loses a few
// entries, while damage to a branch page or an index page can hide whole
// subtrees, which is not what these tests are about and depends on how the
// file happened to be laid out.
func entryLeafPage(page []byte) bool {
	return binary.LittleEndian.Uint16(page[8:]) == 0x02 && bytes.Contains(page, []byte(`{"v":1,"index":`))
}

// TestDamagedLedgerStopsTheServerForensicModeServesAudit: with a page in
// the middle of its ledger overwritten, castellan-server exits non-zero
// naming the file and what to do (no panic, no goroutine dump);
// `castellanctl ledger verify --db` exits 3; with
// --ledger-read-only-forensics the server starts, `castellanctl certs
// list` works and nothing is issued.
func TestDamagedLedgerStopsTheServerForensicModeServesAudit(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	s := quotaStart(t, dataDir, freeAddr(t), freeAddr(t), "castellan-server serving", "--quota-identity-per-ttl", "1000")
	const id = "spiffe://cluster.local/ns/app/sa/app"
	s.ctlRun(t, "entry", "create", "--spiffe-id", id, "--node", "node-1", "--selector", "unix:uid:1000")
	agent, _ := quotaAgent(t, s.caServer, "node-1")
	batch := make([]string, 100)
	for i := range batch {
		batch[i] = id
	}
	for range 4 {
		if n, errs := quotaBatch(t, agent, batch); n != 100 {
			t.Fatalf("filling the ledger: %d issued, %v", n, errs)
		}
	}
	var cp struct {
		VerifierKey string `json:"verifier_key"`
	}
	if err := json.Unmarshal([]byte(s.ctlRun(t, "ledger", "checkpoint", "-o", "json")), &cp); err != nil || cp.VerifierKey == "" {
		t.Fatalf("ledger checkpoint: %v", err)
	}
	quotaStop(t, s.caServer)
	ledgerPath := filepath.Join(dataDir, "ledger.db")
	quotaDamage(t, ledgerPath)

	// The server refuses to start, saying which file and what to do.
	var bins testbin.Builder
	t.Cleanup(bins.Cleanup)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bins.Path(t, "castellan-server"), "--trust-domain", "cluster.local", "--data-dir", dataDir,
		"--listen", freeAddr(t), "--http-listen", freeAddr(t))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("castellan-server on a damaged ledger: %v, want exit status 1\n%s", err, stderr.String())
	}
	for _, want := range []string{ledgerPath, "refusing to start on a damaged ledger", "restore the file from a backup",
		"--ledger-read-only-forensics", "castellanctl ledger verify --db"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr does not say %q:\n%s", want, stderr.String())
		}
	}
	t.Logf("castellan-server on the damaged ledger: %v\n%s", err, stderr.String())
	for _, bad := range []string{"panic", "goroutine ", "SIGSEGV", "fatal error"} {
		if strings.Contains(stderr.String(), bad) {
			t.Errorf("stderr shows a crash (%q):\n%s", bad, stderr.String())
		}
	}

	// ledger verify --db: exit 3, "verification failed".
	out, errOut, err := s.ctlTry("ledger", "verify", "--db", ledgerPath, "--log-key", cp.VerifierKey)
	if !errors.As(err, &exit) || exit.ExitCode() != 3 || !strings.Contains(out, ledgerPath) || strings.Contains(errOut, "panic") {
		t.Fatalf("ledger verify --db of the damaged file: %v, want exit 3 naming it\n%s%s", err, out, errOut)
	}

	t.Logf("ledger verify --db: %v\n%s", err, out)

	// Read-only for forensics: audit reads work, nothing is issued.
	listen, httpAddr := freeAddr(t), freeAddr(t)
	f := quotaStart(t, dataDir, listen, httpAddr, "the ledger is open read-only for forensics", "--ledger-read-only-forensics")
	var certs []map[string]any
	if err := json.Unmarshal([]byte(f.ctlRun(t, "certs", "list", "-o", "json", "--node", "node-1")), &certs); err != nil || len(certs) == 0 {
		t.Fatalf("certs list in forensic mode: %d certificates, %v", len(certs), err)
	}
	serial, _ := certs[0]["serial"].(string)
	_, errOut, err = f.ctlTry("--admin-socket", filepath.Join(dataDir, "admin.sock"), "certs", "revoke", "--reason", "keyCompromise", serial)
	if !errors.As(err, &exit) || !strings.Contains(errOut, "read-only for forensics") {
		t.Fatalf("certs revoke in forensic mode: %v %q, want a refusal saying the ledger is read-only", err, errOut)
	}
	t.Logf("certs revoke in forensic mode: %v: %s", err, errOut)
	resp, err := http.Get("http://" + httpAddr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "no certificate is issued") {
		t.Fatalf("/readyz in forensic mode: %d %q", resp.StatusCode, body)
	}
	if c, err := net.DialTimeout("tcp", listen, 2*time.Second); err == nil {
		c.Close()
		t.Fatalf("the gRPC port %s is served in forensic mode; nothing may be issued", listen)
	}
}

// TestDiskReserveStopsIssuanceAgentKeepsServingItsCache: restarted with a
// disk reserve larger than the free space, the CA starts (its own SVID is
// logged from the reserve), refuses every issuance with a message saying
// why and what to do, raises castellan_ledger_disk_reserve_breached and
// logs an error; a real agent keeps serving the SVID it has cached.
func TestDiskReserveStopsIssuanceAgentKeepsServingItsCache(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real server and agent")
	}
	dir := t.TempDir()
	dataDir, listen, httpAddr := filepath.Join(dir, "data"), freeAddr(t), freeAddr(t)
	s := quotaStart(t, dataDir, listen, httpAddr, "castellan-server serving")
	want := spiffeid.RequireFromString("spiffe://cluster.local/ns/it/sa/reserve")
	s.ctlRun(t, "entry", "create", "--spiffe-id", want.String(), "--node", "it-node",
		"--selector", fmt.Sprintf("unix:uid:%d", os.Getuid()), "--ttl", "3m")
	const otherID = "spiffe://cluster.local/ns/other/sa/app"
	s.ctlRun(t, "entry", "create", "--spiffe-id", otherID, "--node", "node-2", "--selector", "unix:uid:1000")
	other, _ := quotaAgent(t, s.caServer, "node-2")
	token := strings.Fields(s.ctlRun(t, "token", "create", "--node", "it-node"))[0]

	var bins testbin.Builder
	t.Cleanup(bins.Cleanup)
	sock := filepath.Join(dir, "agent.sock")
	agent := exec.Command(bins.Path(t, "castellan-agent"), "--server-address", listen,
		"--trust-bundle", filepath.Join(dataDir, "bundle.pem"), "--data-dir", filepath.Join(dir, "agent"),
		"--socket", sock, "--http-listen", freeAddr(t))
	agent.Env = append(os.Environ(), "CASTELLAN_AGENT_JOIN_TOKEN="+token)
	var agentLog bytes.Buffer
	agent.Stderr = &agentLog
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	agentDone := make(chan struct{})
	go func() { _ = agent.Wait(); close(agentDone) }()
	t.Cleanup(func() {
		_ = agent.Process.Signal(syscall.SIGTERM)
		select {
		case <-agentDone:
		case <-time.After(10 * time.Second):
			_ = agent.Process.Kill()
			<-agentDone
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	fetch := func(what string) *x509svid.SVID {
		t.Helper()
		var c *workloadapi.X509Context
		var err error
		for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
			fctx, fcancel := context.WithTimeout(ctx, 2*time.Second)
			c, err = workloadapi.FetchX509Context(fctx, workloadapi.WithAddr("unix://"+sock))
			fcancel()
			if err == nil {
				break
			}
		}
		if err != nil {
			t.Fatalf("%s: %v\nagent log:\n%s", what, err, agentLog.String())
		}
		svid := c.DefaultSVID()
		if svid.ID != want {
			t.Fatalf("%s: got %s, want %s", what, svid.ID, want)
		}
		if _, _, err := x509svid.Verify(svid.Certificates, c.Bundles); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return svid
	}
	before := fetch("SVID from the agent")

	// Restart the CA with a reserve no disk has.
	quotaStop(t, s.caServer)
	s = quotaStart(t, dataDir, listen, httpAddr, "castellan-server serving", "--ledger-disk-reserve", "1000000GiB")
	n, errs := quotaBatch(t, other, []string{otherID})
	if n != 0 || len(errs) != 1 {
		t.Fatalf("issuance with the reserve breached: %d issued", n)
	}
	if codes.Code(errs[0].GetCode()) != codes.Unavailable || !strings.Contains(errs[0].GetMessage(), "under the reserve of 976.6 TiB") ||
		!strings.Contains(errs[0].GetMessage(), "free disk space") {
		t.Fatalf("refusal %v %q, want Unavailable saying the disk reserve is reached and what to do", codes.Code(errs[0].GetCode()), errs[0].GetMessage())
	}
	t.Logf("refusal: %s %s", codes.Code(errs[0].GetCode()), errs[0].GetMessage())
	metrics := caHTTPGet(t, "http://"+httpAddr+"/metrics")
	if v := metricValue(metrics, "castellan_ledger_disk_reserve_breached"); v != 1 {
		t.Errorf("castellan_ledger_disk_reserve_breached = %v, want 1", v)
	}
	if !strings.Contains(s.log.String(), `"level":"ERROR","msg":"ledger disk reserve breached`) {
		t.Errorf("no error-level log line for the breach:\n%s", s.log)
	}

	// The agent keeps serving the certificate it holds.
	after := fetch("SVID from the agent while the CA refuses issuance")
	if after.Certificates[0].SerialNumber.Cmp(before.Certificates[0].SerialNumber) != 0 {
		t.Fatalf("the agent serves serial %x, want its cached %x (nothing can be issued)",
			after.Certificates[0].SerialNumber, before.Certificates[0].SerialNumber)
	}
	if time.Now().After(after.Certificates[0].NotAfter) {
		t.Fatal("the served SVID has expired")
	}
}
