package integration_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/castellan-dev/castellan/internal/testroot"
)

// attackUser is a throwaway local user the attacks run as.
type attackUser struct {
	name     string
	uid, gid uint32
}

// newAttackUser creates a user with useradd and deletes it when the test
// ends. It skips the test unless run as root (CI is).
func newAttackUser(t *testing.T) attackUser {
	t.Helper()
	testroot.Require(t, "create a throwaway user")
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := "castatk" + hex.EncodeToString(b[:])
	if out, err := exec.Command("useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name).CombinedOutput(); err != nil {
		t.Fatalf("useradd: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("userdel", name).CombinedOutput(); err != nil {
			t.Errorf("userdel %s: %v\n%s", name, err, out)
		}
	})
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	return attackUser{name: name, uid: uint32(uid), gid: uint32(gid)}
}

// command runs exe as the user.
func (u attackUser) command(exe string, args ...string) *exec.Cmd {
	cmd := exec.Command(exe, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: u.uid, Gid: u.gid}}
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	return cmd
}

// attackBins builds the attacker and the trusted binary where any user may
// run them, and returns their paths.
func attackBins(t *testing.T) (attacker, trusted string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "castellan-attack-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, pkg := range map[string]string{"attacker": "./attacker", "trusted": "./attacker/trusted"} {
		if out, err := exec.Command("go", "build", "-o", filepath.Join(dir, name), pkg).CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, out)
		}
	}
	return filepath.Join(dir, "attacker"), filepath.Join(dir, "trusted")
}

// startAgentWith starts the rig's agent with extra flags, and lets every
// user reach its socket.
func (r *agentRig) startAgentWith(token string, extra ...string) {
	r.t.Helper()
	args := []string{"--server-address", r.listen, "--trust-bundle", filepath.Join(r.srvDir, "bundle.pem"),
		"--data-dir", r.agentDir, "--socket", r.sock, "--http-listen", r.agentHTTP, "--log-level", "debug"}
	cmd := exec.Command(r.agent, append(args, extra...)...)
	cmd.Env = append(os.Environ(), "CASTELLAN_AGENT_JOIN_TOKEN="+token)
	r.agentLog = &agentLog{}
	cmd.Stderr = r.agentLog
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.agentCmd = cmd
	r.t.Cleanup(func() { r.stop(cmd) })
	for d := filepath.Dir(r.sock); d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			r.t.Fatal(err)
		}
	}
	agentEventually(r.t, 20*time.Second, "agent socket", func() bool { _, err := os.Stat(r.sock); return err == nil })
}

// trustedIdentity starts a CA and an agent, registers an identity for the
// trusted binary (by path and hash), and waits until the trusted binary,
// run normally by the attack user, receives it.
func trustedIdentity(t *testing.T, u attackUser, trusted string, agentFlags ...string) *agentRig {
	t.Helper()
	r := newAgentRig(t)
	r.startServer()
	token := strings.Fields(r.ctlRun("token", "create", "--node", "it-node", "--ttl", "10m"))[0]
	b, err := os.ReadFile(trusted)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	r.ctlRun("entry", "create", "--spiffe-id", "spiffe://cluster.local/ns/it/sa/trusted", "--node", "it-node",
		"--selector", "unix:path:"+trusted, "--selector", "unix:sha256:"+hex.EncodeToString(sum[:]),
		// The weakest entry there is: any user running the trusted binary
		// gets the identity, so only the connection binding stops the attack.
		"--allow-any-user")
	r.startAgentWith(token, agentFlags...)
	agentEventually(t, 30*time.Second, "the trusted binary to receive its SVID", func() bool {
		out, _ := u.command(trusted, "fetch", r.sock).Output()
		return strings.TrimSpace(string(out)) == "GOT spiffe://cluster.local/ns/it/sa/trusted"
	})
	return r
}

// refusal matches what a refused attacker must be told.
var refusal = regexp.MustCompile(`^DENIED PermissionDenied: .*(held by more than one process|no longer holds this connection|called execve|close-on-exec)`)

// attack runs one attack as u and returns the line printed by the process
// that used the connection. The trusted binary the attacker execs holds
// its inherited descriptors until the attack is over.
func attack(t *testing.T, u attackUser, attacker string, args ...string) string {
	t.Helper()
	cmd := u.command(attacker, args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = stdin.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	line := make(chan string, 1)
	go func() { l, _ := bufio.NewReader(out).ReadString('\n'); line <- strings.TrimSpace(l) }()
	select {
	case l := <-line:
		return l
	case <-time.After(20 * time.Second):
		t.Fatalf("attack %v printed nothing within 20s", args)
		return ""
	}
}

// runAttacks runs variants in turn, n times or until the time is up, and
// fails on any SVID obtained or any answer that does not say why.
func runAttacks(t *testing.T, r *agentRig, u attackUser, attacker string, n int, variants [][]string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	seen := map[string]int{}
	i := 0
	for ; i < n && time.Now().Before(deadline); i++ {
		args := variants[i%len(variants)]
		got := attack(t, u, attacker, args...)
		if strings.HasPrefix(got, "GOT") {
			t.Fatalf("attack %d %v obtained an SVID: %s\nagent log:\n%s", i, args, got, r.agentLog.String())
		}
		m := refusal.FindStringSubmatch(got)
		if m == nil {
			t.Fatalf("attack %d %v: %q; want PermissionDenied saying why", i, args, got)
		}
		seen[m[1]]++
	}
	if i < n/2 {
		t.Fatalf("only %d of %d attacks ran within the time limit", i, n)
	}
	t.Logf("%d attacks refused: %v", i, seen)
}

// TestAgentRefusesConnectionPassedBeforeExec is the fd-passing attack: a
// user connects, sends the connection to a helper with SCM_RIGHTS (which
// holds it, or leaves it in flight until the agent has attested), and
// execs the trusted binary keeping the connection; the helper asks for the
// trusted binary's SVID over the Workload API and SDS. It must never get
// one, and must be told why.
func TestAgentRefusesConnectionPassedBeforeExec(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real binaries")
	}
	u := newAttackUser(t)
	attacker, trusted := attackBins(t)
	r := trustedIdentity(t, u, trusted)
	var variants [][]string
	for _, api := range []string{"workload", "sds"} {
		for _, park := range []string{"hold", "park"} {
			variants = append(variants, []string{"pass", r.sock, trusted, api, park})
		}
	}
	runAttacks(t, r, u, attacker, 50, variants)
}

// TestAgentRefusesConnectionForkedBeforeExec is the fork variant: the
// attacker connects, a child inherits the connection, the attacker execs
// the trusted binary and the child asks for its SVID.
func TestAgentRefusesConnectionForkedBeforeExec(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real binaries")
	}
	u := newAttackUser(t)
	attacker, trusted := attackBins(t)
	r := trustedIdentity(t, u, trusted)
	runAttacks(t, r, u, attacker, 30, [][]string{
		{"fork", r.sock, trusted, "workload"},
		{"fork", r.sock, trusted, "sds"},
	})
}

// agentMetric returns the sum of a metric's samples whose labels contain
// match, from the agent's /metrics.
func agentMetric(t *testing.T, r *agentRig, name, match string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + r.agentHTTP + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var total float64
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, name) || !strings.Contains(line, match) {
			continue
		}
		f := strings.Fields(line)
		v, _ := strconv.ParseFloat(f[len(f)-1], 64)
		total += v
	}
	return total
}

// TestAgentServesWorkloadsDuringSlotFlood: another user opens far more
// connections than it may and leaves them idle. The agent refuses the
// excess at once and counts it, closes the rest after the idle timeout,
// and a registered workload of another uid gets its SVID meanwhile.
func TestAgentServesWorkloadsDuringSlotFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real binaries")
	}
	const perCaller, flood = 8, 60
	u := newAttackUser(t)
	attacker, _ := attackBins(t)
	r := newAgentRig(t)
	r.startServer()
	token := strings.Fields(r.ctlRun("token", "create", "--node", "it-node", "--ttl", "10m"))[0]
	want := "spiffe://cluster.local/ns/it/sa/root-workload"
	r.ctlRun("entry", "create", "--spiffe-id", want, "--node", "it-node", "--selector", fmt.Sprintf("unix:uid:%d", os.Getuid()))
	r.startAgentWith(token, "--max-conns-per-caller", strconv.Itoa(perCaller), "--idle-timeout", "3s")
	addr := workloadapi.WithAddr("unix://" + r.sock)
	agentEventually(t, 30*time.Second, "the workload's first SVID", func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		s, err := workloadapi.FetchX509SVID(ctx, addr)
		return err == nil && s.ID.String() == want
	})

	cmd := u.command(attacker, "flood", r.sock, strconv.Itoa(flood))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	lines := bufio.NewReader(out)
	if l, err := lines.ReadString('\n'); strings.TrimSpace(l) != "ready" {
		t.Fatalf("flooder: %q %v", l, err)
	}
	agentEventually(t, 10*time.Second, "the flood's excess connections to be refused", func() bool {
		return agentMetric(t, r, "castellan_agent_limit_refusals_total", `reason="connections_per_uid"`) == flood-perCaller
	})
	// Every slot the attacker may hold is held: the workload is served.
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	s, err := workloadapi.FetchX509SVID(ctx, addr)
	if err != nil || s.ID.String() != want {
		t.Fatalf("workload during the flood: %v %v\nagent log:\n%s", s, err, r.agentLog.String())
	}
	// The attacker's idle connections are closed after the idle timeout.
	done := make(chan string, 1)
	go func() { l, _ := lines.ReadString('\n'); done <- strings.TrimSpace(l) }()
	select {
	case l := <-done:
		if l != "closed "+strconv.Itoa(flood) {
			t.Fatalf("flooder: %q; want all %d connections closed by the agent", l, flood)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the flood's idle connections were not closed within 30s")
	}
	if got := agentMetric(t, r, "castellan_agent_idle_connections_closed_total", ""); got < perCaller {
		t.Fatalf("idle connections closed = %v, want at least %d", got, perCaller)
	}
}
