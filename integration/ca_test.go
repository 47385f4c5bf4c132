package integration_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/integration/testbin"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// caServer is a running castellan-server binary.
type caServer struct {
	cmd      *exec.Cmd
	dataDir  string
	ctl      string
	addr     string // gRPC
	httpAddr string
	logs     *caLog
	exited   chan error
	waited   bool // the exit status was received from exited
}

// wait waits up to d for the server to exit and returns its status.
func (s *caServer) wait(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case err := <-s.exited:
		s.waited = true
		return err
	case <-time.After(d):
		t.Fatalf("castellan-server did not exit within %s", d)
		return nil
	}
}

// caLog collects the server's JSON log lines and finds the serving line.
type caLog struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	serving chan map[string]any
}

func (l *caLog) scan(r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Bytes()
		l.mu.Lock()
		l.buf.Write(line)
		l.buf.WriteByte('\n')
		l.mu.Unlock()
		var rec map[string]any
		if json.Unmarshal(line, &rec) == nil && rec["msg"] == "castellan-server serving" {
			l.serving <- rec
		}
	}
}

func (l *caLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// caStart starts castellan-server on loopback ports chosen by the kernel
// and waits until it serves.
func caStart(t *testing.T, extra ...string) *caServer {
	t.Helper()
	var bins testbin.Builder
	t.Cleanup(bins.Cleanup)
	serverBin, ctl := bins.Path(t, "castellan-server"), bins.Path(t, "castellanctl")
	s := &caServer{dataDir: filepath.Join(t.TempDir(), "data"), ctl: ctl,
		logs: &caLog{serving: make(chan map[string]any, 1)}, exited: make(chan error, 1)}
	s.cmd = exec.Command(serverBin, "--trust-domain", "cluster.local", "--data-dir", s.dataDir,
		"--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--agent-ttl", "30m")
	s.cmd.Args = append(s.cmd.Args, extra...)
	stderr, err := s.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go s.logs.scan(stderr)
	go func() { s.exited <- s.cmd.Wait() }()
	t.Cleanup(func() {
		if !s.waited {
			_ = s.cmd.Process.Kill()
			<-s.exited
		}
		if t.Failed() {
			t.Logf("castellan-server log:\n%s", s.logs)
		}
	})
	select {
	case rec := <-s.logs.serving:
		s.addr, _ = rec["listen"].(string)
		s.httpAddr, _ = rec["http_listen"].(string)
	case err := <-s.exited:
		s.waited = true
		t.Fatalf("castellan-server exited before serving: %v\n%s", err, s.logs)
	case <-time.After(60 * time.Second):
		t.Fatalf("castellan-server did not start within 60s\n%s", s.logs)
	}
	return s
}

// ctlRun runs castellanctl against the server's admin socket.
func (s *caServer) ctlRun(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, err := s.ctlTry(append([]string{"--admin-socket", filepath.Join(s.dataDir, "admin.sock")}, args...)...)
	if err != nil {
		t.Fatalf("castellanctl %v: %v\n%s", args, err, errOut)
	}
	return out
}

// ctlTry runs castellanctl with args and returns stdout, stderr and the
// exit error.
func (s *caServer) ctlTry(args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.ctl, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// caWriteSVID writes svid's chain and key as PEM files in dir.
func caWriteSVID(t *testing.T, dir string, svid *x509svid.SVID) (certFile, keyFile string) {
	t.Helper()
	certs, key, err := svid.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "svid.pem"), filepath.Join(dir, "svid.key")
	if err := os.WriteFile(certFile, certs, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, key, 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// caDial connects to the server's gRPC port with the given TLS config.
func caDial(t *testing.T, addr string, creds credentials.TransportCredentials) cav1.CertificateAuthorityServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return cav1.NewCertificateAuthorityServiceClient(conn)
}

func caCSR(t *testing.T, id string) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.CertificateRequest{}
	if id != "" {
		u, err := url.Parse(id)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = []*url.URL{u}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return key, der
}

// caVerify checks pb's chain with go-spiffe against bundle and returns the
// SVID.
func caVerify(t *testing.T, pb *cav1.X509SVID, key *ecdsa.PrivateKey, bundle *x509bundle.Bundle, want string) *x509svid.SVID {
	t.Helper()
	var chain []*x509.Certificate
	for _, der := range pb.GetCertChain() {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, c)
	}
	id, _, err := x509svid.Verify(chain, bundle)
	if err != nil {
		t.Fatalf("x509svid.Verify %s: %v", want, err)
	}
	if id.String() != want || pb.GetSpiffeId() != want {
		t.Fatalf("SVID for %s (response says %s), want %s", id, pb.GetSpiffeId(), want)
	}
	return &x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key}
}

func TestCAServerIssuesVerifiableSVIDsToJoinedAgent(t *testing.T) {
	s := caStart(t, "--admin-id", "spiffe://cluster.local/castellan/agent/admin-node")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	const node, appID = "node-1", "spiffe://cluster.local/ns/default/sa/app"

	token := strings.TrimSpace(s.ctlRun(t, "token", "create", "--node", node, "--ttl", "5m"))
	var created []struct {
		ID       string `json:"id"`
		SPIFFEID string `json:"spiffe_id"`
	}
	if err := json.Unmarshal([]byte(s.ctlRun(t, "entry", "create", "--spiffe-id", appID, "--node", node,
		"--selector", "unix:uid:1000", "-o", "json")), &created); err != nil || len(created) != 1 {
		t.Fatalf("entry create output: %v %v", created, err)
	}
	if list := s.ctlRun(t, "entry", "list", "--node", node); !strings.Contains(list, created[0].ID) || !strings.Contains(list, appID) {
		t.Fatalf("entry list does not show the entry:\n%s", list)
	}

	// Bootstrap: TLS verifying the server's SVID against bundle.pem, no client cert.
	trust, err := x509bundle.Load(td, filepath.Join(s.dataDir, "bundle.pem"))
	if err != nil {
		t.Fatal(err)
	}
	serverID := spiffeid.RequireFromPath(td, "/castellan/server")
	anon := caDial(t, s.addr, credentials.NewTLS(tlsconfig.TLSClientConfig(trust, tlsconfig.AuthorizeID(serverID))))
	agentKey, agentCSR := caCSR(t, "")
	att, err := anon.AttestAgent(ctx, &cav1.AttestAgentRequest{
		Attestation: &cav1.AttestAgentRequest_JoinToken{JoinToken: token}, Csr: agentCSR})
	if err != nil {
		t.Fatalf("AttestAgent: %v", err)
	}
	agentSVID := caVerify(t, att.GetSvid(), agentKey, trust, "spiffe://cluster.local/castellan/agent/"+node)
	if _, err := anon.AttestAgent(ctx, &cav1.AttestAgentRequest{
		Attestation: &cav1.AttestAgentRequest_JoinToken{JoinToken: token}, Csr: agentCSR}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("reused join token: %v, want Unauthenticated", err)
	}

	// Everything else over mTLS with the agent SVID.
	agent := caDial(t, s.addr, credentials.NewTLS(tlsconfig.MTLSClientConfig(agentSVID, trust, tlsconfig.AuthorizeID(serverID))))
	gb, err := agent.GetBundle(ctx, &cav1.GetBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	bundle := x509bundle.New(td)
	for _, der := range gb.GetBundle().GetX509Authorities() {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		bundle.AddX509Authority(c)
	}
	key, csr := caCSR(t, appID)
	one, err := agent.SignX509SVID(ctx, &cav1.SignX509SVIDRequest{Csr: csr, EntryId: created[0].ID})
	if err != nil {
		t.Fatalf("SignX509SVID: %v", err)
	}
	caVerify(t, one.GetSvid(), key, bundle, appID)

	batch := &cav1.BatchSignX509SVIDRequest{}
	var keys []*ecdsa.PrivateKey
	for range 5 {
		k, c := caCSR(t, appID)
		keys = append(keys, k)
		batch.Requests = append(batch.Requests, &cav1.SignX509SVIDRequest{Csr: c})
	}
	_, foreign := caCSR(t, "spiffe://cluster.local/ns/default/sa/not-assigned")
	batch.Requests = append(batch.Requests, &cav1.SignX509SVIDRequest{Csr: foreign})
	res, err := agent.BatchSignX509SVID(ctx, batch)
	if err != nil {
		t.Fatalf("BatchSignX509SVID: %v", err)
	}
	for i, k := range keys {
		caVerify(t, res.GetResults()[i].GetSvid(), k, bundle, appID)
	}
	if e := res.GetResults()[5].GetError(); e.GetCode() != int32(codes.PermissionDenied) || !strings.Contains(e.GetMessage(), "not-assigned") {
		t.Fatalf("unassigned batch item: %v, want PermissionDenied naming the ID", res.GetResults()[5])
	}

	// castellanctl over mTLS: allowed for the configured admin ID only.
	adminToken := strings.TrimSpace(s.ctlRun(t, "token", "create", "--node", "admin-node"))
	adminKey, adminCSR := caCSR(t, "")
	adminAtt, err := anon.AttestAgent(ctx, &cav1.AttestAgentRequest{
		Attestation: &cav1.AttestAgentRequest_JoinToken{JoinToken: adminToken}, Csr: adminCSR})
	if err != nil {
		t.Fatal(err)
	}
	adminSVID := caVerify(t, adminAtt.GetSvid(), adminKey, trust, "spiffe://cluster.local/castellan/agent/admin-node")
	bundlePEM := filepath.Join(s.dataDir, "bundle.pem")
	cert, keyFile := caWriteSVID(t, t.TempDir(), adminSVID)
	out, errOut, err := s.ctlTry("--server", s.addr, "--cert", cert, "--key", keyFile, "--bundle", bundlePEM, "entry", "list", "-o", "json")
	if err != nil || !strings.Contains(out, created[0].ID) {
		t.Fatalf("castellanctl over mTLS as admin: %v\n%s%s", err, out, errOut)
	}
	cert, keyFile = caWriteSVID(t, t.TempDir(), agentSVID)
	_, errOut, err = s.ctlTry("--server", s.addr, "--cert", cert, "--key", keyFile, "--bundle", bundlePEM, "entry", "list")
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || exitErr.ExitCode() != 1 || !strings.Contains(errOut, "PermissionDenied") {
		t.Fatalf("castellanctl over mTLS as a non-admin agent: %v %q, want exit 1 and PermissionDenied", err, errOut)
	}

	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"entry"}, 2},
		{[]string{"entry", "create", "--node", "n"}, 2},
		{[]string{"--admin-socket", filepath.Join(t.TempDir(), "none.sock"), "entry", "list"}, 1},
	} {
		_, errOut, err := s.ctlTry(tc.args...)
		if !errors.As(err, &exitErr) || exitErr.ExitCode() != tc.code || errOut == "" {
			t.Errorf("castellanctl %v: %v %q, want exit code %d and a message", tc.args, err, errOut, tc.code)
		}
	}

	metrics := caHTTPGet(t, "http://"+s.httpAddr+"/metrics")
	for _, want := range []string{`castellan_csr_total{reason="ok",result="issued"} 8`, `castellan_csr_total{reason="not_assigned",result="refused"} 1`,
		`castellan_csr_total{reason="join_token_used",result="refused"} 1`, `castellan_ca_certificate_expiry_timestamp_seconds{cert="root"}`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if got := caHTTPGet(t, "http://"+s.httpAddr+"/readyz"); !strings.Contains(got, "ready") {
		t.Errorf("/readyz: %q", got)
	}

	// SIGTERM stops the server gracefully with exit code 0.
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := s.wait(t, 20*time.Second); err != nil {
		t.Fatalf("castellan-server exit after SIGTERM: %v", err)
	}
	if _, err := os.Stat(filepath.Join(s.dataDir, "ledger.db")); err != nil {
		t.Fatalf("ledger file: %v", err)
	}
}

func caHTTPGet(t *testing.T, u string) string {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", u, resp.Status)
	}
	return string(body)
}
