package integration_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/internal/freeport"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/castellan-dev/castellan/integration/testbin"
)

// agentTTL is the workload SVID lifetime: the agent renews at about half.
const agentTTL = 12 * time.Second

// agentRig is a real castellan-server and castellan-agent on loopback.
type agentRig struct {
	t                          *testing.T
	server, agent, ctl         string
	srvDir, agentDir, sock     string
	listen, srvHTTP, agentHTTP string
	srvCmd, agentCmd           *exec.Cmd
	agentLog                   *agentLog
}

// freeAddr returns a loopback address whose port no other test holds
// (see internal/freeport): safe to hand to a server started later, and to
// restart one on.
func freeAddr(t *testing.T) string {
	t.Helper()
	addr, err := freeport.Addr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

func newAgentRig(t *testing.T) *agentRig {
	var b testbin.Builder
	t.Cleanup(b.Cleanup)
	dir := t.TempDir()
	r := &agentRig{
		t: t, server: b.Path(t, "castellan-server"), agent: b.Path(t, "castellan-agent"), ctl: b.Path(t, "castellanctl"),
		srvDir: filepath.Join(dir, "srv"), agentDir: filepath.Join(dir, "agent"), sock: filepath.Join(dir, "agent.sock"),
		listen: freeAddr(t), srvHTTP: freeAddr(t), agentHTTP: freeAddr(t),
	}
	if err := os.Mkdir(r.srvDir, 0o700); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *agentRig) startServer() {
	r.t.Helper()
	cmd := exec.Command(r.server, "--data-dir", r.srvDir, "--listen", r.listen, "--http-listen", r.srvHTTP,
		"--default-ttl", agentTTL.String())
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.srvCmd = cmd
	r.t.Cleanup(func() { r.stop(cmd) })
	agentEventually(r.t, 20*time.Second, "server admin socket", func() bool {
		_, err := os.Stat(filepath.Join(r.srvDir, "admin.sock"))
		return err == nil
	})
}

func (r *agentRig) stop(cmd *exec.Cmd) {
	if cmd == nil || cmd.ProcessState != nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

func (r *agentRig) ctlRun(args ...string) string {
	r.t.Helper()
	out, err := exec.Command(r.ctl, append([]string{"--admin-socket", filepath.Join(r.srvDir, "admin.sock")}, args...)...).Output()
	if err != nil {
		r.t.Fatalf("castellanctl %v: %v", args, err)
	}
	return strings.TrimSpace(string(out))
}

func (r *agentRig) startAgent(token string) {
	r.t.Helper()
	args := []string{"--server-address", r.listen, "--trust-bundle", filepath.Join(r.srvDir, "bundle.pem"),
		"--data-dir", r.agentDir, "--socket", r.sock, "--http-listen", r.agentHTTP, "--log-level", "debug"}
	cmd := exec.Command(r.agent, args...)
	if token != "" { // never on argv: castellan-agent refuses --join-token
		cmd.Env = append(os.Environ(), "CASTELLAN_AGENT_JOIN_TOKEN="+token)
	}
	r.agentLog = &agentLog{}
	cmd.Stderr = r.agentLog
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.agentCmd = cmd
	r.t.Cleanup(func() { r.stop(cmd) })
}

// agentLog lets the test read the log while the process writes it.
type agentLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *agentLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *agentLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (r *agentRig) readyz() (int, string) {
	resp, err := http.Get("http://" + r.agentHTTP + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func agentEventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// agentWatcher collects every X.509 context the go-spiffe client receives.
type agentWatcher struct {
	t       *testing.T
	updates chan *workloadapi.X509Context
}

func (w agentWatcher) OnX509ContextUpdate(c *workloadapi.X509Context) {
	select {
	case w.updates <- c:
	default:
	}
}
func (w agentWatcher) OnX509ContextWatchError(error) {}

func agentVerify(t *testing.T, c *workloadapi.X509Context, want spiffeid.ID) *x509svid.SVID {
	t.Helper()
	svid := c.DefaultSVID()
	if svid.ID != want {
		t.Fatalf("received %s, want %s", svid.ID, want)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, c.Bundles); err != nil {
		t.Fatalf("x509svid.Verify rejected a received SVID: %v", err)
	}
	return svid
}

// TestAgentRotatesServesFromCacheAndRecovers runs the real castellan-server
// and castellan-agent: go-spiffe's Workload API client receives an SVID and
// a rotation; with the CA stopped the agent keeps serving; restarted with
// the CA down it serves from its bbolt cache; the CA back, it rotates again;
// killed with SIGKILL during rotations, it restarts cleanly.
func TestAgentRotatesServesFromCacheAndRecovers(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real binaries for about a minute")
	}
	r := newAgentRig(t)
	r.startServer()
	token := r.ctlRun("token", "create", "--node", "it-node", "--ttl", "10m")
	token = strings.Fields(token)[0]
	want := spiffeid.RequireFromString("spiffe://cluster.local/ns/it/sa/agent-test")
	r.ctlRun("entry", "create", "--spiffe-id", want.String(), "--node", "it-node",
		"--selector", fmt.Sprintf("unix:uid:%d", os.Getuid()), "--ttl", agentTTL.String())
	r.startAgent(token)

	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	addr := "unix://" + r.sock
	agentEventually(t, 20*time.Second, "agent socket", func() bool { _, err := os.Stat(r.sock); return err == nil })

	watch := func() (agentWatcher, func()) {
		w := agentWatcher{t: t, updates: make(chan *workloadapi.X509Context, 16)}
		wctx, wcancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = workloadapi.WatchX509Context(wctx, w, workloadapi.WithAddr(addr))
		}()
		return w, func() { wcancel(); <-done }
	}
	next := func(w agentWatcher, what string) *x509svid.SVID {
		t.Helper()
		select {
		case c := <-w.updates:
			return agentVerify(t, c, want)
		case <-time.After(30 * time.Second):
			t.Fatalf("no Workload API update: %s\nagent log:\n%s", what, r.agentLog.String())
			return nil
		}
	}

	// First SVID, then a pushed rotation.
	w, stopWatch := watch()
	first := next(w, "first SVID")
	rotated := next(w, "rotation")
	if rotated.Certificates[0].SerialNumber.Cmp(first.Certificates[0].SerialNumber) == 0 {
		t.Fatal("rotation pushed the same certificate")
	}
	stopWatch()

	// CA stopped: the agent keeps serving and stays ready.
	r.stop(r.srvCmd)
	c, err := workloadapi.FetchX509Context(ctx, workloadapi.WithAddr(addr))
	if err != nil {
		t.Fatalf("fetch with the CA down: %v", err)
	}
	agentVerify(t, c, want)
	if code, body := r.readyz(); code != http.StatusOK {
		t.Fatalf("/readyz with the CA down = %d %q, want 200", code, body)
	}

	// Agent restarted with the CA down: served from the bbolt cache.
	r.stop(r.agentCmd)
	r.startAgent("")
	agentEventually(t, 10*time.Second, "restarted agent socket", func() bool { _, err := os.Stat(r.sock); return err == nil })
	c, err = workloadapi.FetchX509Context(ctx, workloadapi.WithAddr(addr))
	if err != nil {
		t.Fatalf("fetch from a restarted agent with the CA down: %v\n%s", err, r.agentLog.String())
	}
	cached := agentVerify(t, c, want)
	if code, body := r.readyz(); code != http.StatusOK || !strings.Contains(body, "cache") {
		t.Fatalf("/readyz = %d %q, want 200 serving from cache", code, body)
	}

	// CA back: the agent recovers and rotates again.
	r.startServer()
	w, stopWatch = watch()
	for {
		got := next(w, "rotation after the CA came back")
		if got.Certificates[0].SerialNumber.Cmp(cached.Certificates[0].SerialNumber) != 0 {
			break
		}
	}
	stopWatch()

	// SIGKILL while rotating, repeatedly; every restart serves a valid SVID.
	for i := range 3 {
		time.Sleep(agentTTL / 4)
		_ = r.agentCmd.Process.Kill()
		_ = r.agentCmd.Wait()
		r.startAgent("")
		// The killed agent left its socket file; wait for the new one.
		var c *workloadapi.X509Context
		agentEventually(t, 10*time.Second, fmt.Sprintf("fetch after SIGKILL %d", i), func() bool {
			fctx, fcancel := context.WithTimeout(ctx, time.Second)
			defer fcancel()
			var err error
			c, err = workloadapi.FetchX509Context(fctx, workloadapi.WithAddr(addr))
			return err == nil
		})
		agentVerify(t, c, want)
	}
}
