package integration_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/castellan-dev/castellan/integration/testbin"
)

// failoverCA is one castellan-server process.
type failoverCA struct {
	dir, listen, http string
	cmd               *exec.Cmd
	log               *agentLog
}

// failoverRig runs castellan-server processes and one castellan-agent.
type failoverRig struct {
	t                     *testing.T
	server, agent, ctlBin string
	dir                   string
}

func (r *failoverRig) newCA(name string) *failoverCA {
	dir := filepath.Join(r.dir, name)
	if err := os.Mkdir(dir, 0o700); err != nil {
		r.t.Fatal(err)
	}
	return &failoverCA{dir: dir, listen: freeAddr(r.t), http: freeAddr(r.t)}
}

// start runs the server on its data directory and waits for its admin
// socket.
func (r *failoverRig) start(ca *failoverCA) {
	r.t.Helper()
	_ = os.Remove(filepath.Join(ca.dir, "admin.sock"))
	cmd := exec.Command(r.server, "--data-dir", ca.dir, "--listen", ca.listen, "--http-listen", ca.http,
		"--default-ttl", agentTTL.String())
	ca.log = &agentLog{}
	cmd.Stderr = ca.log
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	ca.cmd = cmd
	r.t.Cleanup(func() { stopProcess(cmd) })
	agentEventually(r.t, 20*time.Second, "admin socket of the CA in "+ca.dir, func() bool {
		_, err := os.Stat(filepath.Join(ca.dir, "admin.sock"))
		return err == nil
	})
}

func stopProcess(cmd *exec.Cmd) {
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

func (r *failoverRig) ctl(ca *failoverCA, args ...string) string {
	r.t.Helper()
	out, err := exec.Command(r.ctlBin, append([]string{"--admin-socket", filepath.Join(ca.dir, "admin.sock")}, args...)...).Output()
	if err != nil {
		r.t.Fatalf("castellanctl %v on %s: %v", args, ca.dir, err)
	}
	return strings.TrimSpace(string(out))
}

// certsOf returns the serials of the certificates ca issued to id.
func (r *failoverRig) certsOf(ca *failoverCA, id spiffeid.ID) map[string]bool {
	r.t.Helper()
	var list []struct {
		Serial string `json:"serial"`
	}
	if err := json.Unmarshal([]byte(r.ctl(ca, "certs", "list", "-o", "json", "--limit", "0", "--spiffe-id", id.String())), &list); err != nil {
		r.t.Fatal(err)
	}
	out := map[string]bool{}
	for _, c := range list {
		out[c.Serial] = true
	}
	return out
}

// copyDir copies the regular files of src into dst (the admin socket is
// left behind).
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.MkdirAll(target, info.Mode().Perm())
		case !info.Mode().IsRegular():
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, info.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
}

// failoverMetric returns the value of one sample on the agent's /metrics.
func failoverMetric(t *testing.T, addr, sample string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			return v
		}
	}
	return ""
}

var streamEndpoint = regexp.MustCompile(`"msg":"CA sync stream (?:open|moved to another endpoint)","endpoint":"([^"]+)"`)

// TestAgentFailsOverAcrossCAEndpoints gives the real agent four CA
// addresses: a closed port, a castellan-server of another CA (its
// certificate does not verify against the agent's bundle), and two
// castellan-server replicas of the real CA (the second started from a copy
// of the first's data directory, so both hold the same keys, token and
// entry; a shared datastore will replace the copy). The agent obtains its
// SVID and rotates; the replica serving its sync stream is killed with
// SIGKILL and the agent keeps rotating through the other, without one
// failed rotation; the other CA never issues anything to it.
func TestAgentFailsOverAcrossCAEndpoints(t *testing.T) {
	if testing.Short() {
		t.Skip("runs four real processes for about a minute")
	}
	var b testbin.Builder
	t.Cleanup(b.Cleanup)
	r := &failoverRig{t: t, server: b.Path(t, "castellan-server"), agent: b.Path(t, "castellan-agent"),
		ctlBin: b.Path(t, "castellanctl"), dir: t.TempDir()}
	want := spiffeid.RequireFromString("spiffe://cluster.local/ns/it/sa/failover")

	a, bb, other := r.newCA("replica-a"), r.newCA("replica-b"), r.newCA("other-ca")
	r.start(a)
	token := strings.Fields(r.ctl(a, "token", "create", "--node", "it-node", "--ttl", "10m"))[0]
	r.ctl(a, "entry", "create", "--spiffe-id", want.String(), "--node", "it-node",
		"--selector", fmt.Sprintf("unix:uid:%d", os.Getuid()), "--ttl", agentTTL.String())
	stopProcess(a.cmd)
	copyDir(t, a.dir, bb.dir)
	r.start(a)
	r.start(bb)
	r.start(other)
	dead := freeAddr(t) // closed again when it returns

	sock, agentHTTP := filepath.Join(r.dir, "agent.sock"), freeAddr(t)
	agent := exec.Command(r.agent, "--server-address", dead, "--server-address", other.listen,
		"--server-address", a.listen, "--server-address", bb.listen,
		"--trust-bundle", filepath.Join(a.dir, "bundle.pem"), "--data-dir", filepath.Join(r.dir, "agent"),
		"--socket", sock, "--http-listen", agentHTTP, "--log-level", "debug")
	agent.Env = append(os.Environ(), "CASTELLAN_AGENT_JOIN_TOKEN="+token)
	alog := &agentLog{}
	agent.Stderr = alog
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopProcess(agent) })

	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	agentEventually(t, 20*time.Second, "agent socket", func() bool { _, err := os.Stat(sock); return err == nil })
	w := agentWatcher{t: t, updates: make(chan *workloadapi.X509Context, 16)}
	go func() { _ = workloadapi.WatchX509Context(ctx, w, workloadapi.WithAddr("unix://"+sock)) }()
	var last *x509svid.SVID
	next := func(what string) *x509svid.SVID {
		t.Helper()
		for {
			select {
			case c := <-w.updates:
				got := agentVerify(t, c, want)
				if last == nil || got.Certificates[0].SerialNumber.Cmp(last.Certificates[0].SerialNumber) != 0 {
					last = got
					return got
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("no new SVID: %s\nagent log:\n%s", what, alog.String())
			}
		}
	}
	next("first SVID")
	next("first rotation")

	// Kill the replica that serves the sync stream.
	m := streamEndpoint.FindAllStringSubmatch(alog.String(), -1)
	if len(m) == 0 {
		t.Fatalf("the agent did not log its sync stream's endpoint:\n%s", alog.String())
	}
	victim, survivor := a, bb
	if m[len(m)-1][1] == bb.listen {
		victim, survivor = bb, a
	} else if m[len(m)-1][1] != a.listen {
		t.Fatalf("sync stream on %s, which is neither replica (%s, %s)", m[len(m)-1][1], a.listen, bb.listen)
	}
	t.Logf("sync stream on %s: SIGKILL; %s must serve", victim.listen, survivor.listen)
	if err := victim.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = victim.cmd.Wait()
	before := r.certsOf(survivor, want)
	for i := range 2 {
		svid := next(fmt.Sprintf("rotation %d after SIGKILL of %s", i+1, victim.listen))
		serial := fmt.Sprintf("%x", svid.Certificates[0].SerialNumber)
		if got := r.certsOf(survivor, want); !got[serial] || before[serial] {
			t.Fatalf("rotation %d (serial %s) was not issued by the surviving replica %s", i+1, serial, survivor.listen)
		}
	}

	if f := failoverMetric(t, agentHTTP, `castellan_agent_rotations_total{result="failure"}`); f != "0" {
		t.Errorf("agent counted %s failed rotations; want none\n%s", f, alog.String())
	}
	if f := failoverMetric(t, agentHTTP, `castellan_agent_ca_failovers_total{call="SyncAgent"}`); f != "1" {
		t.Errorf("castellan_agent_ca_failovers_total{call=\"SyncAgent\"} = %q, want 1", f)
	}
	if !strings.Contains(alog.String(), `"endpoint":"`+survivor.listen+`","previous":"`+victim.listen+`"`) {
		t.Errorf("the agent did not log its sync stream moving from %s to %s", victim.listen, survivor.listen)
	}
	if !strings.Contains(alog.String(), `"msg":"TLS handshake with a CA endpoint failed; not using it","endpoint":"`+other.listen+`"`) {
		t.Errorf("the agent did not warn that %s (another CA) failed its TLS handshake", other.listen)
	}
	if got := r.certsOf(other, want); len(got) != 0 {
		t.Fatalf("the other CA issued %d certificates for %s", len(got), want)
	}
	if out := r.ctl(other, "certs", "list", "-o", "json", "--node", "it-node"); out != "[]" && out != "null" {
		t.Fatalf("the other CA issued to node it-node: %s", out)
	}
}
