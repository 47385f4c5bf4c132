package integration_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/castellan-dev/castellan/integration/envoysds"
)

// rotationPublishDelay is the server's --publish-delay in the rotation
// test: how long a new root is in every bundle before it may sign.
const rotationPublishDelay = 3 * time.Second

// rotationTTL is the workload SVID lifetime: long, so that only a taint
// makes the agent replace an SVID during the test.
const rotationTTL = 20 * time.Minute

// startRotatingServer starts castellan-server on r with a short publish
// delay, the default TTL of the rotation test and the extra flags.
func startRotatingServer(r *agentRig, extra ...string) {
	r.t.Helper()
	cmd := exec.Command(r.server, append([]string{"--data-dir", r.srvDir, "--listen", r.listen, "--http-listen", r.srvHTTP,
		"--default-ttl", rotationTTL.String(), "--publish-delay", rotationPublishDelay.String()}, extra...)...)
	log := &agentLog{}
	cmd.Stderr = log
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.srvCmd = cmd
	r.t.Cleanup(func() {
		r.stop(cmd)
		if r.t.Failed() {
			r.t.Logf("server log:\n%s", log.String())
		}
	})
	agentEventually(r.t, 20*time.Second, "server admin socket", func() bool {
		_, err := os.Stat(filepath.Join(r.srvDir, "admin.sock"))
		return err == nil
	})
}

// ctlExit runs castellanctl on r's server and returns its exit code,
// stdout and stderr.
func (r *agentRig) ctlExit(args ...string) (int, string, string) {
	r.t.Helper()
	cmd := exec.Command(r.ctl, append([]string{"--admin-socket", filepath.Join(r.srvDir, "admin.sock")}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, out.String(), errb.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), out.String(), errb.String()
	}
	r.t.Fatalf("castellanctl %v: %v", args, err)
	return 0, "", ""
}

// rotAuthority is what the test reads of `castellanctl authority ... -o json`.
type rotAuthority struct {
	ID            string     `json:"id"`
	State         string     `json:"state"`
	ActivatableAt *time.Time `json:"activatable_at"`
	Root          struct {
		SHA256 string `json:"sha256"`
	} `json:"root"`
	Intermediate struct {
		SHA256 string `json:"sha256"`
	} `json:"intermediate"`
}

func (r *agentRig) authorityJSON(args ...string) rotAuthority {
	r.t.Helper()
	code, out, errs := r.ctlExit(append(args, "-o", "json")...)
	var a rotAuthority
	if code != 0 || json.Unmarshal([]byte(out), &a) != nil {
		r.t.Fatalf("castellanctl %v: exit %d %s %s", args, code, out, errs)
	}
	return a
}

func (r *agentRig) authorities() []rotAuthority {
	r.t.Helper()
	code, out, errs := r.ctlExit("authority", "list", "-o", "json")
	var list []rotAuthority
	if code != 0 || json.Unmarshal([]byte(out), &list) != nil {
		r.t.Fatalf("authority list: exit %d %s %s", code, out, errs)
	}
	return list
}

// activateWhenPublished waits for a's activatable time and activates it.
func (r *agentRig) activateWhenPublished(a rotAuthority) {
	r.t.Helper()
	if a.ActivatableAt == nil {
		r.t.Fatalf("authority %s has no activatable time: its root is not published", a.ID)
	}
	if d := time.Until(*a.ActivatableAt); d > 0 {
		if d > time.Minute {
			r.t.Fatalf("authority %s activatable only at %s", a.ID, a.ActivatableAt)
		}
		time.Sleep(d + 100*time.Millisecond)
	}
	code, out, errs := r.ctlExit("authority", "activate", a.ID, "-o", "json")
	var got rotAuthority
	switch {
	case code == 0 && json.Unmarshal([]byte(out), &got) == nil && got.State == "active":
	case code == 4 && strings.Contains(errs, "is active; only a prepared authority can be activated"):
		// The server's own rotation step (every 5s) activated it first,
		// as it does once the publish delay has passed.
		r.t.Logf("authority %s was activated by the server's rotation schedule", a.ID)
	default:
		r.t.Fatalf("activate %s: exit %d %s %s", a.ID, code, out, errs)
	}
}

func fingerprint(c *x509.Certificate) string {
	s := sha256.Sum256(c.Raw)
	return hex.EncodeToString(s[:])
}

// trustLog records, for one consumer of the agent (SDS or Workload API),
// every root and every leaf chain it received, and checks on each update
// that the root of every newly received leaf arrived in an EARLIER update:
// a peer never sees a leaf it cannot verify yet.
type trustLog struct {
	name string
	mu   sync.Mutex
	n    int
	// roots: fingerprint -> update number where it arrived; rootAt: when.
	roots      map[string]int
	rootAt     map[string]time.Time
	issuers    map[string]bool // intermediate fingerprints of leaves seen
	violations []string
	leaves     map[string]bool // leaf fingerprints already checked
	last       int             // roots in the last update
}

func newTrustLog(name string) *trustLog {
	return &trustLog{name: name, roots: map[string]int{}, rootAt: map[string]time.Time{}, issuers: map[string]bool{}, leaves: map[string]bool{}}
}

// update records one update: the bundle roots and the chains it holds.
func (l *trustLog) update(roots []*x509.Certificate, chains [][]*x509.Certificate) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n++
	l.last = len(roots)
	for _, r := range roots {
		if _, ok := l.roots[fingerprint(r)]; !ok {
			l.roots[fingerprint(r)] = l.n
			l.rootAt[fingerprint(r)] = time.Now()
		}
	}
	for _, ch := range chains {
		leaf := fingerprint(ch[0])
		if l.leaves[leaf] {
			continue
		}
		l.leaves[leaf] = true
		l.issuers[fingerprint(ch[1])] = true
		root := rootOf(ch, roots)
		if root == nil {
			l.violations = append(l.violations, fmt.Sprintf("%s update %d: leaf %x verifies to no root of its own update", l.name, l.n, ch[0].SerialNumber))
			continue
		}
		if at := l.roots[fingerprint(root)]; at == l.n && l.n > 1 {
			l.violations = append(l.violations, fmt.Sprintf("%s update %d: leaf %x arrived together with its root %s, not after it", l.name, l.n, ch[0].SerialNumber, root.Subject))
		}
	}
}

func (l *trustLog) sawIssuer(fp string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.issuers[fp]
}

func (l *trustLog) hasRoot(fp string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.roots[fp]
	return ok
}

// rootArrived returns when the root with fingerprint fp first arrived.
func (l *trustLog) rootArrived(fp string) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	at, ok := l.rootAt[fp]
	return at, ok
}

// lastRoots is the number of roots in the last update.
func (l *trustLog) lastRoots() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last
}

func (l *trustLog) check(t *testing.T) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, v := range l.violations {
		t.Error(v)
	}
}

// rootOf returns the root of roots that chain (leaf, intermediates)
// verifies to.
func rootOf(chain []*x509.Certificate, roots []*x509.Certificate) *x509.Certificate {
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	for _, r := range roots {
		pool := x509.NewCertPool()
		pool.AddCert(r)
		if _, err := chain[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err == nil {
			return r
		}
	}
	return nil
}

// wlWatcher feeds every Workload API update to a trustLog.
type wlWatcher struct{ log *trustLog }

func (w wlWatcher) OnX509ContextUpdate(c *workloadapi.X509Context) {
	var chains [][]*x509.Certificate
	for _, s := range c.SVIDs {
		chains = append(chains, s.Certificates)
	}
	var roots []*x509.Certificate
	for _, b := range c.Bundles.Bundles() {
		roots = append(roots, b.X509Authorities()...)
	}
	w.log.update(roots, chains)
}
func (wlWatcher) OnX509ContextWatchError(error) {}

// sdsMaterial is the latest TLS material of the SDS consumer.
type sdsMaterial struct {
	cert  *tls.Certificate
	pool  *x509.CertPool
	roots []*x509.Certificate
}

// runSDS subscribes to name and ROOTCA like Envoy, feeds every update to
// log and keeps the latest material in cur.
func runSDS(ctx context.Context, t *testing.T, sock, name string, log *trustLog, cur *atomic.Pointer[sdsMaterial]) {
	conn, err := envoysds.Dial(sock)
	if err != nil {
		t.Error(err)
		return
	}
	defer conn.Close()
	md, _ := structpb.NewStruct(map[string]any{"NAMESPACE": "it", "SERVICE_ACCOUNT": "rot-client"})
	c, err := envoysds.New(conn, envoysds.Config{
		Node:          &corev3.Node{Id: "sidecar~127.0.0.1~rot-client.it~it.svc.cluster.local", Cluster: "rot-client.it", Metadata: md},
		ResourceNames: []string{name, "ROOTCA"},
		MinBackoff:    20 * time.Millisecond, MaxBackoff: 500 * time.Millisecond,
	})
	if err != nil {
		t.Error(err)
		return
	}
	go func() { _ = c.Run(ctx) }()
	for {
		select {
		case <-ctx.Done():
			return
		case u := <-c.Updates():
			m, err := sdsMaterialOf(u, name)
			if err != nil {
				continue // not complete yet
			}
			cur.Store(m)
			log.update(m.roots, [][]*x509.Certificate{leafChain(m.cert)})
		}
	}
}

func sdsMaterialOf(u envoysds.Update, name string) (*sdsMaterial, error) {
	def, root := u.Secrets[name], u.Secrets["ROOTCA"]
	if def == nil || root == nil {
		return nil, errors.New("incomplete")
	}
	cert, err := envoysds.Certificate(def)
	if err != nil {
		return nil, err
	}
	pool, err := envoysds.CertPool(root)
	if err != nil {
		return nil, err
	}
	m := &sdsMaterial{cert: cert, pool: pool}
	rest := root.GetValidationContext().GetTrustedCa().GetInlineBytes()
	for {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if c, err := x509.ParseCertificate(b.Bytes); err == nil {
			m.roots = append(m.roots, c)
		}
	}
	return m, nil
}

func leafChain(cert *tls.Certificate) []*x509.Certificate {
	var out []*x509.Certificate
	for _, der := range cert.Certificate {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil
		}
		out = append(out, c)
	}
	return out
}

// sdsClientTLS is an mTLS client configuration from the SDS material:
// the current certificate, and the server verified against the current
// ROOTCA with the server's SPIFFE ID.
func sdsClientTLS(cur *atomic.Pointer[sdsMaterial], server spiffeid.ID) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // verified below against the SDS bundle, as Envoy does
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return cur.Load().cert, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			m := cur.Load()
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			if _, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: m.pool, Intermediates: inter,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
				return err
			}
			id, err := x509svid.IDFromCert(cs.PeerCertificates[0])
			if err != nil || id != server {
				return fmt.Errorf("server is %v, want %s (%v)", id, server, err)
			}
			return nil
		},
	}
}

// traffic sends requests over a fresh mTLS connection each until ctx ends
// and counts successes and failures.
type traffic struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	errs       []string
}

func (tr *traffic) run(ctx context.Context, wg *sync.WaitGroup, name, url string, tc *tls.Config, want spiffeid.ID) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tc, DisableKeepAlives: true}}
		for ctx.Err() == nil {
			err := tr.once(ctx, client, url, want)
			switch {
			case err == nil:
				tr.ok.Add(1)
			case ctx.Err() == nil:
				tr.failed.Add(1)
				tr.mu.Lock()
				if len(tr.errs) < 10 {
					tr.errs = append(tr.errs, fmt.Sprintf("%s %s: %v", time.Now().Format("15:04:05.000"), name, err))
				}
				tr.mu.Unlock()
			}
		}
	}()
}

func (tr *traffic) once(ctx context.Context, client *http.Client, url string, want spiffeid.ID) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || string(body) != want.String() {
		return fmt.Errorf("status %d body %q", resp.StatusCode, body)
	}
	return nil
}

// pickID returns a picker of the SVID named id (the first one until the
// agent serves it).
func pickID(id spiffeid.ID) workloadapi.X509SourceOption {
	return workloadapi.WithDefaultX509SVIDPicker(func(svids []*x509svid.SVID) *x509svid.SVID {
		for _, s := range svids {
			if s.ID == id {
				return s
			}
		}
		return svids[0]
	})
}

// agentIssuer is the fingerprint of the intermediate that signed the
// agent's own SVID (agent.pem in its data directory).
func agentIssuer(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "agent.pem"))
	if err != nil {
		return ""
	}
	var certs []*x509.Certificate
	for {
		var blk *pem.Block
		if blk, b = pem.Decode(b); blk == nil {
			break
		}
		if blk.Type == "CERTIFICATE" {
			if c, err := x509.ParseCertificate(blk.Bytes); err == nil {
				certs = append(certs, c)
			}
		}
	}
	if len(certs) < 2 {
		return ""
	}
	return fingerprint(certs[1])
}

// rotationRun is two workloads of one agent talking mTLS continuously:
// a server workload with its Workload API SVID, a client over the
// Workload API and one over SDS (an Envoy-like client), each consumer's
// updates recorded in a trustLog.
type rotationRun struct {
	ctx                  context.Context
	addr                 string
	wl, sds              *trustLog
	sdsCur               *atomic.Pointer[sdsMaterial]
	srcServer, srcClient *workloadapi.X509Source
	tr                   *traffic
	stop                 func() // stops the traffic (also at cleanup)
}

// startRotationTraffic registers the two workloads (serverID, clientID)
// on r's server, starts r's agent and the traffic, and returns once
// requests flow.
func startRotationTraffic(t *testing.T, r *agentRig, serverID, clientID spiffeid.ID) *rotationRun {
	t.Helper()
	td := serverID.TrustDomain()
	token := strings.Fields(r.ctlRun("token", "create", "--node", "rot-node", "--ttl", "10m"))[0]
	for _, id := range []spiffeid.ID{serverID, clientID} {
		r.ctlRun("entry", "create", "--spiffe-id", id.String(), "--node", "rot-node",
			"--selector", fmt.Sprintf("unix:uid:%d", os.Getuid()), "--ttl", rotationTTL.String())
	}
	r.startAgent(token)
	agentEventually(t, 20*time.Second, "agent socket", func() bool { _, err := os.Stat(r.sock); return err == nil })
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent log:\n%s", r.agentLog.String())
		}
	})

	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	addr := "unix://" + r.sock
	wl, sds := newTrustLog("Workload API"), newTrustLog("SDS")
	var bg sync.WaitGroup
	t.Cleanup(bg.Wait)
	t.Cleanup(cancel)
	bg.Add(2)
	go func() {
		defer bg.Done()
		_ = workloadapi.WatchX509Context(ctx, wlWatcher{wl}, workloadapi.WithAddr(addr))
	}()
	var sdsCur atomic.Pointer[sdsMaterial]
	go func() { defer bg.Done(); runSDS(ctx, t, r.sock, clientID.String(), sds, &sdsCur) }()

	srcServer, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(addr)), pickID(serverID))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srcServer.Close() })
	srcClient, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(addr)), pickID(clientID))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srcClient.Close() })
	agentEventually(t, 30*time.Second, "both SVIDs and the SDS material", func() bool {
		a, errA := srcServer.GetX509SVID()
		b, errB := srcClient.GetX509SVID()
		return errA == nil && errB == nil && a.ID == serverID && b.ID == clientID && sdsCur.Load() != nil
	})

	// The server workload: mTLS with its SVID, any peer of the trust domain.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{
		TLSConfig: tlsconfig.MTLSServerConfig(srcServer, srcServer, tlsconfig.AuthorizeMemberOf(td)),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			id, err := x509svid.IDFromCert(req.TLS.PeerCertificates[0])
			if err != nil {
				http.Error(w, err.Error(), http.StatusForbidden)
				return
			}
			fmt.Fprint(w, id.String())
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	go func() { _ = hs.ServeTLS(lis, "", "") }()
	t.Cleanup(func() { hs.Close() })
	url := "https://" + lis.Addr().String() + "/"

	tr := &traffic{}
	tctx, stopTraffic := context.WithCancel(ctx)
	var twg sync.WaitGroup
	tr.run(tctx, &twg, "workload-api", url, tlsconfig.MTLSClientConfig(srcClient, srcClient, tlsconfig.AuthorizeID(serverID)), clientID)
	tr.run(tctx, &twg, "sds", url, sdsClientTLS(&sdsCur, serverID), clientID)
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			stopTraffic()
			twg.Wait()
		}
	}
	t.Cleanup(stop)
	agentEventually(t, 20*time.Second, "traffic flowing", func() bool { return tr.ok.Load() > 20 })
	return &rotationRun{ctx: ctx, addr: addr, wl: wl, sds: sds, sdsCur: &sdsCur, srcServer: srcServer, srcClient: srcClient, tr: tr, stop: stop}
}

// replaced waits until both workloads' SVIDs and the SDS client's hold
// leaves signed by the intermediate with fingerprint fp.
func (m *rotationRun) replaced(t *testing.T, what, fp string) {
	t.Helper()
	agentEventually(t, 90*time.Second, what, func() bool {
		a, errA := m.srcServer.GetX509SVID()
		b, errB := m.srcClient.GetX509SVID()
		mat := m.sdsCur.Load()
		return errA == nil && errB == nil && fingerprint(a.Certificates[1]) == fp &&
			fingerprint(b.Certificates[1]) == fp && mat != nil && fingerprint(leafChain(mat.cert)[1]) == fp
	})
}

// TestCARotationWithContinuousMTLS runs the real castellan-server and
// castellan-agent with two workloads talking mTLS continuously, over the
// Workload API (go-spiffe) and over SDS (an Envoy-like client), through an
// intermediate rotation, a root rotation (activation refused before the
// publish delay, with the explanation, then allowed), taints of the old
// authorities and their revocation (refused without --force while their
// leaves may live): the agent replaces every SVID under a tainted
// authority, its own included, each consumer receives every new root
// before any leaf under it and loses the revoked ones, and no request
// fails.
func TestCARotationWithContinuousMTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real binaries for about two minutes")
	}
	r := newAgentRig(t)
	startRotatingServer(r)
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	serverID := spiffeid.RequireFromPath(td, "/ns/it/sa/rot-server")
	clientID := spiffeid.RequireFromPath(td, "/ns/it/sa/rot-client")
	run := startRotationTraffic(t, r, serverID, clientID)
	ctx, addr, wl, sds, tr, stop := run.ctx, run.addr, run.wl, run.sds, run.tr, run.stop

	list := r.authorities()
	if len(list) != 1 || list[0].State != "active" {
		t.Fatalf("fresh CA authorities: %+v", list)
	}
	first := list[0]
	replaced := func(what string, by rotAuthority) { t.Helper(); run.replaced(t, what, by.Intermediate.SHA256) }

	// 1. Intermediate rotation, then taint of the first authority.
	second := r.authorityJSON("authority", "prepare")
	if second.Root.SHA256 != first.Root.SHA256 || second.State != "prepared" {
		t.Fatalf("prepare: %+v, want prepared under the same root", second)
	}
	r.activateWhenPublished(second)
	if a := r.authorityJSON("authority", "taint", first.ID); a.State != "tainted" {
		t.Fatalf("taint %s: %+v", first.ID, a)
	}
	replaced("SVIDs replaced under the second intermediate after the taint", second)

	// 2. Root rotation: refused before the publish delay, then allowed.
	third := r.authorityJSON("authority", "prepare", "--new-root")
	if third.Root.SHA256 == first.Root.SHA256 {
		t.Fatal("prepare --new-root kept the root")
	}
	code, _, errs := r.ctlExit("authority", "activate", third.ID)
	if code != 4 || !strings.Contains(errs, "publish delay") || !strings.Contains(errs, "peers that have not received it yet would reject its leaves") {
		t.Fatalf("activation before the publish delay: exit %d %s, want 4 with the explanation", code, errs)
	}
	agentEventually(t, 10*time.Second, "the new root at both consumers", func() bool {
		return wl.hasRoot(third.Root.SHA256) && sds.hasRoot(third.Root.SHA256)
	})
	r.activateWhenPublished(third)
	if a := r.authorityJSON("authority", "taint", second.ID); a.State != "tainted" {
		t.Fatalf("taint %s: %+v", second.ID, a)
	}
	replaced("SVIDs replaced under the new root after the taint", third)
	if !wl.sawIssuer(third.Intermediate.SHA256) || !sds.sawIssuer(third.Intermediate.SHA256) {
		t.Fatal("a consumer never received a leaf under the new root")
	}

	// The agent's own SVID was replaced too, under the new root.
	agentEventually(t, 90*time.Second, "the agent SVID under the new root", func() bool {
		return agentIssuer(t, r.agentDir) == third.Intermediate.SHA256
	})

	// 3. Revoke the tainted authorities: refused while their leaves may
	// live, then forced; their roots leave every bundle.
	code, _, errs = r.ctlExit("authority", "revoke", first.ID)
	if code != 4 || !strings.Contains(errs, "may have signed leaves valid until") {
		t.Fatalf("revoke without --force: exit %d %s, want 4 with the explanation", code, errs)
	}
	for _, a := range []rotAuthority{first, second} {
		if got := r.authorityJSON("authority", "revoke", a.ID, "--force"); got.State != "revoked" {
			t.Fatalf("revoke %s: %+v", a.ID, got)
		}
	}
	agentEventually(t, 10*time.Second, "the old root gone from both consumers", func() bool {
		return wl.lastRoots() == 1 && sds.lastRoots() == 1
	})
	// The agent still reaches the CA: a new identity is issued.
	extraID := spiffeid.RequireFromPath(td, "/ns/it/sa/rot-extra")
	r.ctlRun("entry", "create", "--spiffe-id", extraID.String(), "--node", "rot-node",
		"--selector", fmt.Sprintf("unix:uid:%d", os.Getuid()), "--ttl", rotationTTL.String())
	agentEventually(t, 30*time.Second, "an SVID for a new entry after the revocation", func() bool {
		fctx, fcancel := context.WithTimeout(ctx, 2*time.Second)
		defer fcancel()
		c, err := workloadapi.FetchX509Context(fctx, workloadapi.WithAddr(addr))
		if err != nil {
			return false
		}
		for _, s := range c.SVIDs {
			if s.ID == extraID {
				return true
			}
		}
		return false
	})

	// Traffic keeps flowing under the new root.
	base := tr.ok.Load()
	agentEventually(t, 20*time.Second, "traffic under the new root", func() bool { return tr.ok.Load() > base+20 })
	stop()
	wl.check(t)
	sds.check(t)
	if f := tr.failed.Load(); f != 0 {
		t.Fatalf("%d of %d requests failed across the rotations: %v", f, f+tr.ok.Load(), tr.errs)
	}
	states := map[string]string{}
	for _, a := range r.authorities() {
		states[a.ID] = a.State
	}
	if states[first.ID] != "revoked" || states[second.ID] != "revoked" || states[third.ID] != "active" {
		t.Fatalf("authority states after the test: %v", states)
	}
	t.Logf("%d mTLS requests, none failed, across an intermediate rotation, a root rotation, two taints and two revocations", tr.ok.Load())
}
