package integration_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
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
	"github.com/castellan-dev/castellan/internal/pgtest"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// haCluster is several castellan-server replicas sharing one PostgreSQL
// database, one plugged-in CA and one log key, each on fixed loopback
// ports so that a replica restarted after SIGKILL has the same address.
type haCluster struct {
	t        *testing.T
	pg       *pgtest.Server
	dir      string
	dsnFile  string
	keyFile  string
	caDir    string
	ctl      string
	addrs    []string
	https    []string
	replicas []*caServer
	// kekFile, when set, replaces the plug-in CA: the replicas generate
	// and rotate their CA in the shared authority journal, its keys sealed
	// under this key-encryption key (see useManagedCA).
	kekFile string
}

// useManagedCA makes the replicas keep a generated CA in the shared
// journal, sealed under one KEK file (mode 0400, as from a Secret), with a
// 3 s publish delay so that a root rotation fits in a test.
func (c *haCluster) useManagedCA() {
	c.kekFile = filepath.Join(c.dir, "authority.kek")
	kek := make([]byte, 32)
	if _, err := rand.Read(kek); err != nil {
		c.t.Fatal(err)
	}
	if err := os.WriteFile(c.kekFile, []byte(hex.EncodeToString(kek)), 0o400); err != nil {
		c.t.Fatal(err)
	}
}

// newHACluster prepares n replicas (not started): a fresh database, a DSN
// file (mode 0400, as from a Secret), a log key made with `castellanctl
// ledger keygen`, and a plug-in CA (writeCACerts).
func newHACluster(t *testing.T, n int) *haCluster {
	t.Helper()
	var bins testbin.Builder
	t.Cleanup(bins.Cleanup)
	c := &haCluster{t: t, pg: pgtest.Start(t), dir: t.TempDir(), ctl: bins.Path(t, "castellanctl"),
		replicas: make([]*caServer, n)}
	c.dsnFile = filepath.Join(c.dir, "dsn")
	if err := os.WriteFile(c.dsnFile, []byte(c.pg.NewDatabase(t)), 0o400); err != nil {
		t.Fatal(err)
	}
	c.keyFile = filepath.Join(c.dir, "ledger.key")
	if out, err := exec.Command(c.ctl, "ledger", "keygen", "--trust-domain", "cluster.local", "--out", c.keyFile).CombinedOutput(); err != nil {
		t.Fatalf("castellanctl ledger keygen: %v\n%s", err, out)
	}
	c.caDir = t.TempDir()
	writeCACerts(t, c.caDir) // the plug-in CA every replica signs with
	for range n {
		c.addrs = append(c.addrs, freeAddr(t))
		c.https = append(c.https, freeAddr(t))
	}
	return c
}

// start starts replica i and waits until it serves.
func (c *haCluster) start(i int) *caServer {
	c.t.Helper()
	ca := []string{"--root-cert", filepath.Join(c.caDir, "root.pem"),
		"--intermediate-cert", filepath.Join(c.caDir, "intermediate.pem"),
		"--intermediate-key", filepath.Join(c.caDir, "intermediate.key")}
	if c.kekFile != "" {
		ca = []string{"--kek-file", c.kekFile, "--publish-delay", "3s"}
	}
	s := caStart(c.t, append(ca, "--listen", c.addrs[i], "--http-listen", c.https[i],
		"--datastore-file", c.dsnFile, "--ledger-key-file", c.keyFile,
		"--default-ttl", "2m",
		// The load tests renew one identity of one node hundreds of times a
		// minute: far over the per-replica issuance quotas (8 per TTL per
		// identity), which would refuse them with ResourceExhausted.
		"--quota-identity-per-ttl", "100000", "--quota-node-burst", "100000", "--quota-node-per-hour", "1000000")...)
	c.replicas[i] = s
	return s
}

// kill SIGKILLs replica i.
func (c *haCluster) kill(i int) {
	s := c.replicas[i]
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	s.wait(c.t, 10*time.Second)
}

// ready reports replica i's /readyz status code (0 if unreachable).
func (c *haCluster) ready(i int) int {
	cl := http.Client{Timeout: time.Second}
	resp, err := cl.Get("http://" + c.https[i] + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// trust is the cluster's trust bundle.
func (c *haCluster) trust() *x509bundle.Bundle {
	file := filepath.Join(c.caDir, "bundle.pem")
	if c.kekFile != "" {
		file = filepath.Join(c.replicas[0].dataDir, "bundle.pem") // as the replica publishes it now
	}
	b, err := x509bundle.Load(spiffeid.RequireTrustDomainFromString("cluster.local"), file)
	if err != nil {
		c.t.Fatal(err)
	}
	return b
}

// exported returns the ledger as `castellanctl ledger export` prints it
// through replica i.
func (c *haCluster) exported(i int) []exportedLine {
	c.t.Helper()
	var out []exportedLine
	sc := bufio.NewScanner(strings.NewReader(c.replicas[i].ctlRun(c.t, "ledger", "export")))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l exportedLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			c.t.Fatalf("ledger export line %q: %v", sc.Text(), err)
		}
		out = append(out, l)
	}
	return out
}

// exportedLine is the part of a `ledger export` line the tests read.
type exportedLine struct {
	Index    uint64 `json:"index"`
	Kind     string `json:"kind"`
	Serial   string `json:"serial"`
	LeafHash string `json:"leaf_hash"`
	Error    string `json:"error"`
}

// haAgent starts a castellan-agent for a join token made through replica
// tokenVia, connected to the replicas listed (in that order).
func (c *haCluster) haAgent(node string, tokenVia int, servers ...int) *agentRig {
	c.t.Helper()
	r := newAgentRig(c.t)
	token := strings.Fields(c.replicas[tokenVia].ctlRun(c.t, "token", "create", "--node", node, "--ttl", "10m"))[0]
	args := []string{"--trust-bundle", filepath.Join(c.caDir, "bundle.pem"), "--data-dir", r.agentDir,
		"--socket", r.sock, "--http-listen", r.agentHTTP, "--log-level", "debug"}
	for _, i := range servers {
		args = append(args, "--server-address", c.addrs[i])
	}
	cmd := exec.Command(r.agent, args...)
	cmd.Env = append(os.Environ(), "CASTELLAN_AGENT_JOIN_TOKEN="+token)
	r.agentLog = &agentLog{}
	cmd.Stderr = r.agentLog
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	r.agentCmd = cmd
	c.t.Cleanup(func() {
		r.stop(cmd)
		if c.t.Failed() {
			c.t.Logf("agent %s log:\n%s", node, r.agentLog.String())
		}
	})
	agentEventually(c.t, 20*time.Second, "agent socket", func() bool { _, err := os.Stat(r.sock); return err == nil })
	return r
}

// attestedClient attests node through replica i with a join token made
// through replica tokenVia, and returns a CA client of that replica
// authenticated as the node's agent.
func (c *haCluster) attestedClient(node string, tokenVia, i int) cav1.CertificateAuthorityServiceClient {
	c.t.Helper()
	trust := c.trust()
	serverID := spiffeid.RequireFromString("spiffe://cluster.local/castellan/server")
	token := strings.TrimSpace(c.replicas[tokenVia].ctlRun(c.t, "token", "create", "--node", node))
	anon := caDial(c.t, c.addrs[i], credentials.NewTLS(tlsconfig.TLSClientConfig(trust, tlsconfig.AuthorizeID(serverID))))
	key, csr := caCSR(c.t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	att, err := anon.AttestAgent(ctx, &cav1.AttestAgentRequest{
		Attestation: &cav1.AttestAgentRequest_JoinToken{JoinToken: token}, Csr: csr})
	if err != nil {
		c.t.Fatalf("AttestAgent %s through replica %d (token made through %d): %v", node, i, tokenVia, err)
	}
	svid := caVerify(c.t, att.GetSvid(), key, trust, "spiffe://cluster.local/castellan/agent/"+node)
	return caDial(c.t, c.addrs[i], credentials.NewTLS(tlsconfig.MTLSClientConfig(svid, trust, tlsconfig.AuthorizeID(serverID))))
}

// TestHAJoinTokenUsedThroughAnotherReplica: a join token created through
// one replica is accepted once through another, and refused on its second
// use through a third.
func TestHAJoinTokenUsedThroughAnotherReplica(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL and three servers")
	}
	c := newHACluster(t, 3)
	for i := range 3 {
		c.start(i)
	}
	token := strings.TrimSpace(c.replicas[0].ctlRun(t, "token", "create", "--node", "ha-token-node"))
	trust := c.trust()
	serverID := spiffeid.RequireFromString("spiffe://cluster.local/castellan/server")
	use := func(i int) error {
		anon := caDial(t, c.addrs[i], credentials.NewTLS(tlsconfig.TLSClientConfig(trust, tlsconfig.AuthorizeID(serverID))))
		_, csr := caCSR(t, "")
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := anon.AttestAgent(ctx, &cav1.AttestAgentRequest{
			Attestation: &cav1.AttestAgentRequest_JoinToken{JoinToken: token}, Csr: csr})
		return err
	}
	if err := use(1); err != nil {
		t.Fatalf("token made through replica 0, used through replica 1: %v", err)
	}
	if err := use(2); status.Code(err) != codes.PermissionDenied && status.Code(err) != codes.Unauthenticated {
		t.Fatalf("second use of the token through replica 2: %v, want a refusal", err)
	}
}

// haIssuer issues SVIDs in a loop through the replicas in turn, moving to
// the next replica when one is unavailable, and records every serial the
// CA returned.
type haIssuer struct {
	mu       sync.Mutex
	serials  map[string]bool
	failures []error
	issued   int
}

func (h *haIssuer) run(ctx context.Context, t *testing.T, clients []cav1.CertificateAuthorityServiceClient, id string) {
	for i := 0; ctx.Err() == nil; {
		_, csr := caCSR(t, id)
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := clients[i%len(clients)].SignX509SVID(cctx, &cav1.SignX509SVIDRequest{Csr: csr})
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			if code := status.Code(err); code != codes.Unavailable && code != codes.DeadlineExceeded && code != codes.Canceled {
				h.mu.Lock()
				h.failures = append(h.failures, err)
				h.mu.Unlock()
			}
			i++ // fail over to the next replica
			time.Sleep(20 * time.Millisecond)
			continue
		}
		cert, perr := x509.ParseCertificate(resp.GetSvid().GetCertChain()[0])
		h.mu.Lock()
		if perr != nil {
			h.failures = append(h.failures, perr)
			h.mu.Unlock()
			continue
		}
		h.serials[fmt.Sprintf("%x", cert.SerialNumber)] = true
		h.issued++
		h.mu.Unlock()
	}
}

// TestHAKillReplicasUnderIssuance: under continuous issuance through three
// replicas, SIGKILL one, then another, then restart both: nothing a retry
// could serve fails, a real agent given all three addresses rotates its
// SVID throughout without one failed rotation, every certificate returned
// is in the one log exactly once, the log verifies through every replica,
// and every checkpoint saved during the run is consistent with the final
// log.
func TestHAKillReplicasUnderIssuance(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL and three servers")
	}
	c := newHACluster(t, 3)
	for i := range 3 {
		c.start(i)
	}
	entryID := "spiffe://cluster.local/ns/ha/sa/load"
	c.replicas[1].ctlRun(t, "entry", "create", "--spiffe-id", entryID, "--node", "ha-load", "--selector", "unix:uid:0", "--ttl", "2m")
	var clients []cav1.CertificateAuthorityServiceClient
	for i := range 3 {
		clients = append(clients, c.attestedClient("ha-load", (i+1)%3, i))
	}
	rotID := "spiffe://cluster.local/ns/ha/sa/rotating"
	c.replicas[0].ctlRun(t, "entry", "create", "--spiffe-id", rotID, "--node", "ha-rot", "--selector",
		fmt.Sprintf("unix:uid:%d", os.Getuid()), "--ttl", agentTTL.String())
	agent := c.haAgent("ha-rot", 2, 0, 1, 2)
	agentEventually(t, 30*time.Second, "the rotating agent's first SVID", func() bool {
		return agentMetric(t, agent, "castellan_agent_rotations_total", `result="success"`) >= 1
	})
	rotated0 := agentMetric(t, agent, "castellan_agent_rotations_total", `result="success"`)

	h := &haIssuer{serials: map[string]bool{}}
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	saved := c.saveCheckpoints(ctx, &wg, 2) // replica 2 is never killed
	for w := range 4 {
		wg.Add(1)
		go func() { defer wg.Done(); h.run(ctx, t, clients[w%3:], entryID) }()
	}
	count := func() int { h.mu.Lock(); defer h.mu.Unlock(); return h.issued }
	progress := func(what string) {
		n := count()
		agentEventually(t, 30*time.Second, what, func() bool { return count() >= n+50 })
	}
	progress("issuance through three replicas")
	c.kill(0)
	progress("issuance after replica 0 was killed")
	c.kill(1)
	progress("issuance after replicas 0 and 1 were killed")
	c.start(0)
	c.start(1)
	progress("issuance after the restarts")
	agentEventually(t, 2*agentTTL, "two rotations of the agent's SVID during the run", func() bool {
		return agentMetric(t, agent, "castellan_agent_rotations_total", `result="success"`) >= rotated0+2
	})
	cancel()
	wg.Wait()
	if f := agentMetric(t, agent, "castellan_agent_rotations_total", `result="failure"`); f != 0 {
		t.Errorf("the agent failed %v rotations that another replica could have served", f)
	}
	if len(h.failures) > 0 {
		t.Fatalf("%d requests failed with a non-retryable error, first: %v", len(h.failures), h.failures[0])
	}

	seen := map[string]int{}
	var first []exportedLine
	for i := range 3 {
		lines := c.exported(i)
		if i == 0 {
			first = lines
			for _, l := range lines {
				if l.Error != "" {
					t.Fatalf("ledger entry %d: %s", l.Index, l.Error)
				}
				if l.Kind == "issuance" || l.Kind == "renewal" {
					seen[l.Serial]++
				}
			}
		} else {
			// The agent may rotate between two exports: compare the
			// common prefix, leaf by leaf.
			for j := range min(len(lines), len(first)) {
				if lines[j].LeafHash != first[j].LeafHash {
					t.Fatalf("entry %d differs between replica %d and replica 0: the replicas show different logs", j, i)
				}
			}
		}
		for j, l := range lines {
			if l.Index != uint64(j) {
				t.Fatalf("replica %d: entry %d has index %d: the log has a gap or a duplicate", i, j, l.Index)
			}
		}
		for _, cp := range *saved {
			if v := c.replicas[i].ctlRun(t, "ledger", "verify", "--since", cp); !strings.HasPrefix(v, "OK:") {
				t.Fatalf("ledger verify --since %s through replica %d: %s", filepath.Base(cp), i, v)
			}
		}
	}
	if len(*saved) < 3 {
		t.Errorf("only %d checkpoints were saved during the run", len(*saved))
	}
	for serial := range h.serials {
		if seen[serial] != 1 {
			t.Errorf("serial %s returned to a client is in the log %d times", serial, seen[serial])
		}
	}
	t.Logf("%d SVIDs issued across the kills; %d log entries", len(h.serials), len(first))
}

// saveCheckpoints saves a checkpoint through replica i every 500 ms until
// ctx ends, into files it lists (read them after wg.Wait()).
func (c *haCluster) saveCheckpoints(ctx context.Context, wg *sync.WaitGroup, i int) *[]string {
	var files []string
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := 0; ctx.Err() == nil && n < 1000; n++ {
			f := filepath.Join(c.dir, fmt.Sprintf("checkpoint-%03d", n))
			args := []string{"--admin-socket", filepath.Join(c.replicas[i].dataDir, "admin.sock"), "ledger", "checkpoint", "--save", f}
			if _, _, err := c.replicas[i].ctlTry(args...); err == nil {
				files = append(files, f)
			}
			select {
			case <-ctx.Done():
			case <-time.After(500 * time.Millisecond):
			}
		}
	}()
	return &files
}

// TestHAPostgresRestartUnderLoad: PostgreSQL restarted under load makes
// the replicas not ready and refuse issuance with Unavailable; they recover
// by themselves and nothing acknowledged is lost.
func TestHAPostgresRestartUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL and two servers")
	}
	c := newHACluster(t, 2)
	for i := range 2 {
		c.start(i)
	}
	entryID := "spiffe://cluster.local/ns/ha/sa/pg-restart"
	c.replicas[0].ctlRun(t, "entry", "create", "--spiffe-id", entryID, "--node", "ha-pg", "--selector", "unix:uid:0", "--ttl", "2m")
	clients := []cav1.CertificateAuthorityServiceClient{c.attestedClient("ha-pg", 0, 0), c.attestedClient("ha-pg", 1, 1)}
	h := &haIssuer{serials: map[string]bool{}}
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Add(1)
		go func() { defer wg.Done(); h.run(ctx, t, clients[w:], entryID) }()
	}
	count := func() int { h.mu.Lock(); defer h.mu.Unlock(); return h.issued }
	agentEventually(t, 30*time.Second, "issuance before the restart", func() bool { return count() >= 30 })

	if err := c.pg.Stop(); err != nil {
		t.Fatal(err)
	}
	agentEventually(t, 15*time.Second, "replicas not ready without their database", func() bool {
		return c.ready(0) == http.StatusServiceUnavailable && c.ready(1) == http.StatusServiceUnavailable
	})
	_, csr := caCSR(t, entryID)
	sctx, scancel := context.WithTimeout(t.Context(), 10*time.Second)
	_, err := clients[0].SignX509SVID(sctx, &cav1.SignX509SVIDRequest{Csr: csr})
	scancel()
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("issuance without the database: %v, want Unavailable", err)
	}
	if err := c.pg.Restart(); err != nil {
		t.Fatal(err)
	}
	agentEventually(t, 30*time.Second, "replicas ready again", func() bool {
		return c.ready(0) == http.StatusOK && c.ready(1) == http.StatusOK
	})
	n := count()
	agentEventually(t, 30*time.Second, "issuance after the restart", func() bool { return count() >= n+30 })
	cancel()
	wg.Wait()
	if len(h.failures) > 0 {
		t.Fatalf("%d requests failed with a non-retryable error, first: %v", len(h.failures), h.failures[0])
	}
	logged := map[string]bool{}
	for _, l := range c.exported(1) {
		logged[l.Serial] = true
	}
	for serial := range h.serials {
		if !logged[serial] {
			t.Errorf("serial %s was acknowledged but is not in the log", serial)
		}
	}
	if v := c.replicas[0].ctlRun(t, "ledger", "verify"); !strings.HasPrefix(v, "OK:") {
		t.Fatalf("ledger verify: %s", v)
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		t.Logf("%d SVIDs acknowledged across the PostgreSQL restart", len(h.serials))
	}
}

// TestHAChangesReachAgentsOnEveryReplica: agents connected to different
// replicas see what was done through others — an entry created through
// replica 1 reaches the agent on replica 0; a certificate held by the agent
// on replica 2 and revoked through replica 0 is replaced within 5 s, and
// its serial is in replica 1's CRL; certs list through any replica sees
// every certificate.
func TestHAChangesReachAgentsOnEveryReplica(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL, three servers and two agents")
	}
	c := newHACluster(t, 3)
	for i := range 3 {
		c.start(i)
	}
	uid := fmt.Sprintf("unix:uid:%d", os.Getuid())
	idA := spiffeid.RequireFromString("spiffe://cluster.local/ns/ha/sa/on-a")
	idC := spiffeid.RequireFromString("spiffe://cluster.local/ns/ha/sa/on-c")
	agentA := c.haAgent("ha-node-a", 1, 0) // token through replica 1, served by replica 0
	agentC := c.haAgent("ha-node-c", 0, 2) // token through replica 0, served by replica 2
	c.replicas[1].ctlRun(t, "entry", "create", "--spiffe-id", idA.String(), "--node", "ha-node-a", "--selector", uid, "--ttl", "2m")
	c.replicas[1].ctlRun(t, "entry", "create", "--spiffe-id", idC.String(), "--node", "ha-node-c", "--selector", uid, "--ttl", "2m")

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	fetch := func(r *agentRig, want spiffeid.ID, what string) *x509svid.SVID {
		t.Helper()
		var got *x509svid.SVID
		agentEventually(t, 20*time.Second, what, func() bool {
			fctx, fcancel := context.WithTimeout(ctx, 2*time.Second)
			defer fcancel()
			xc, err := workloadapi.FetchX509Context(fctx, workloadapi.WithAddr("unix://"+r.sock))
			if err != nil || xc.DefaultSVID().ID != want {
				return false
			}
			got = agentVerify(t, xc, want)
			return true
		})
		return got
	}
	fetch(agentA, idA, "the entry made through replica 1 served by the agent on replica 0")
	held := fetch(agentC, idC, "the first SVID of the agent on replica 2")
	serial := serialOf(held.Certificates[0].SerialNumber)

	start := time.Now()
	c.replicas[0].ctlRun(t, "certs", "revoke", serial, "--reason", "keyCompromise")
	agentEventually(t, 5*time.Second, "the agent on replica 2 replacing a certificate revoked through replica 0", func() bool {
		fctx, fcancel := context.WithTimeout(ctx, time.Second)
		defer fcancel()
		xc, err := workloadapi.FetchX509Context(fctx, workloadapi.WithAddr("unix://"+agentC.sock))
		return err == nil && serialOf(xc.DefaultSVID().Certificates[0].SerialNumber) != serial
	})
	t.Logf("revocation through replica 0 reached the agent on replica 2 in %v", time.Since(start))

	agentEventually(t, 5*time.Second, "the serial in replica 1's CRL", func() bool {
		crl := fetchCRL(t, "http://"+c.https[1]+"/crl")
		for _, e := range crl.RevokedCertificateEntries {
			if serialOf(e.SerialNumber) == serial {
				return true
			}
		}
		return false
	})
	for i := range 3 {
		out := c.replicas[i].ctlRun(t, "certs", "list", "--spiffe-id", idC.String(), "--state", "revoked")
		if !strings.Contains(strings.ToLower(out), strings.ToLower(serial)) {
			t.Errorf("certs list through replica %d does not show the revoked %s:\n%s", i, serial, out)
		}
	}
}

// haAuthority is what the test reads of `castellanctl authority ... -o json`.
type haAuthority struct {
	ID            string     `json:"id"`
	State         string     `json:"state"`
	ActivatableAt *time.Time `json:"activatable_at"`
	Intermediate  struct {
		SHA256 string `json:"sha256"`
	} `json:"intermediate"`
}

// authorities lists the authorities through replica i.
func (c *haCluster) authorities(i int) map[string]string {
	c.t.Helper()
	var list []haAuthority
	if err := json.Unmarshal([]byte(c.replicas[i].ctlRun(c.t, "authority", "list", "-o", "json")), &list); err != nil {
		c.t.Fatal(err)
	}
	states := map[string]string{}
	for _, a := range list {
		states[a.ID] = a.State
	}
	return states
}

// bundleRoots counts the roots in replica i's published bundle.pem.
func (c *haCluster) bundleRoots(i int) int {
	b, err := x509bundle.Load(spiffeid.RequireTrustDomainFromString("cluster.local"), filepath.Join(c.replicas[i].dataDir, "bundle.pem"))
	if err != nil {
		return -1
	}
	return len(b.X509Authorities())
}

// TestHARotationObeyedByEveryReplica: two replicas on one PostgreSQL keep a
// generated CA in the shared authority journal (keys sealed under one KEK
// file). A root rotation prepared through replica 0 reaches replica 1's
// bundle before anything is signed under it; activated through replica 1
// once published for the delay, both replicas then sign under the new
// intermediate and list the same states.
func TestHARotationObeyedByEveryReplica(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL and two servers")
	}
	c := newHACluster(t, 2)
	c.useManagedCA()
	c.start(0)
	c.start(1)
	if a, b := c.authorities(0), c.authorities(1); len(a) != 1 || fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatalf("the replicas start with authorities %v and %v, want the same single one", a, b)
	}
	var prepared haAuthority
	if err := json.Unmarshal([]byte(c.replicas[0].ctlRun(t, "authority", "prepare", "--new-root", "-o", "json")), &prepared); err != nil {
		t.Fatal(err)
	}
	agentEventually(t, 5*time.Second, "the new root in replica 1's bundle", func() bool { return c.bundleRoots(1) == 2 })
	if st := c.authorities(1)[prepared.ID]; st != "prepared" && st != "active" {
		t.Fatalf("replica 1 sees the new authority as %q", st)
	}
	if prepared.ActivatableAt != nil {
		time.Sleep(time.Until(*prepared.ActivatableAt) + 100*time.Millisecond)
	}
	_, _, _ = c.replicas[1].ctlTry("--admin-socket", filepath.Join(c.replicas[1].dataDir, "admin.sock"), "authority", "activate", prepared.ID)
	agentEventually(t, 10*time.Second, "both replicas listing the new authority active", func() bool {
		return c.authorities(0)[prepared.ID] == "active" && c.authorities(1)[prepared.ID] == "active"
	})
	entryID := "spiffe://cluster.local/ns/ha/sa/rotated"
	c.replicas[0].ctlRun(t, "entry", "create", "--spiffe-id", entryID, "--node", "ha-rot-ca", "--selector", "unix:uid:0", "--ttl", "2m")
	for i := range 2 {
		client := c.attestedClient("ha-rot-ca", i, i)
		_, csr := caCSR(t, entryID)
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		resp, err := client.SignX509SVID(ctx, &cav1.SignX509SVIDRequest{Csr: csr})
		cancel()
		if err != nil {
			t.Fatalf("issuance through replica %d after the rotation: %v", i, err)
		}
		chain := resp.GetSvid().GetCertChain()
		sum := sha256.Sum256(chain[1])
		if hex.EncodeToString(sum[:]) != prepared.Intermediate.SHA256 {
			t.Errorf("replica %d signed under intermediate %x, not the activated authority's %s", i, sum, prepared.Intermediate.SHA256)
		}
	}
}
