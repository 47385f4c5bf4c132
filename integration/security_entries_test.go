package integration_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
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
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// secLog is a process's stderr, readable while the process writes it.
type secLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *secLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *secLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// secAgent is a castellan-agent process started by these tests.
type secAgent struct {
	cmd    *exec.Cmd
	log    *secLog
	exited chan error
	dir    string
}

// secStartAgent starts castellan-agent against s with extra flags and
// environment; it is stopped at the end of the test.
func secStartAgent(t *testing.T, s *caServer, extra []string, env ...string) *secAgent {
	t.Helper()
	var bins testbin.Builder
	t.Cleanup(bins.Cleanup)
	dir := t.TempDir()
	a := &secAgent{log: &secLog{}, exited: make(chan error, 1), dir: dir}
	args := append([]string{"--server-address", s.addr, "--trust-bundle", filepath.Join(s.dataDir, "bundle.pem"),
		"--data-dir", filepath.Join(dir, "data"), "--socket", filepath.Join(dir, "agent.sock"),
		"--http-listen", "127.0.0.1:0", "--log-level", "debug"}, extra...)
	a.cmd = exec.Command(bins.Path(t, "castellan-agent"), args...)
	a.cmd.Env = append(os.Environ(), env...)
	a.cmd.Stderr = a.log
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { a.exited <- a.cmd.Wait() }()
	t.Cleanup(func() {
		_ = a.cmd.Process.Kill()
		<-a.exited
		if t.Failed() {
			t.Logf("castellan-agent log:\n%s", a.log)
		}
	})
	return a
}

// waitLog waits up to d for the agent's log to match re; it fails the test
// if the agent exits first.
func (a *secAgent) waitLog(t *testing.T, d time.Duration, re *regexp.Regexp) string {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		if m := re.FindString(a.log.String()); m != "" {
			return m
		}
		select {
		case err := <-a.exited:
			a.exited <- err
			t.Fatalf("castellan-agent exited (%v) before logging %s", err, re)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("castellan-agent did not log %s within %s", re, d)
		}
	}
}

// runAgentOnce runs castellan-agent with args and env, which must make it
// exit within 20s, and returns its exit code and stderr.
func runAgentOnce(t *testing.T, args []string, env ...string) (int, string) {
	t.Helper()
	var bins testbin.Builder
	t.Cleanup(bins.Cleanup)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bins.Path(t, "castellan-agent"), args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || ctx.Err() != nil {
		t.Fatalf("castellan-agent %q: %v (want a prompt non-zero exit)\n%s", args, err, out)
	}
	return exit.ExitCode(), string(out)
}

var attestedWithToken = regexp.MustCompile(`"msg":"attested with join token"`)

// TestAgentRefusesJoinTokenOnArgv: `castellan-agent --join-token VALUE`
// exits at once with status 2 and a message naming the safe ways, and
// never echoes the token.
func TestAgentRefusesJoinTokenOnArgv(t *testing.T) {
	const token = "cjt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	for _, args := range [][]string{
		{"--data-dir", t.TempDir(), "--join-token", token},
		{"--data-dir", t.TempDir(), "--join-token=" + token},
	} {
		code, out := runAgentOnce(t, args)
		if code != 2 || !strings.Contains(out, "--join-token-file") || !strings.Contains(out, "CASTELLAN_AGENT_JOIN_TOKEN") ||
			!strings.Contains(out, "/proc/PID/cmdline") {
			t.Fatalf("castellan-agent %q: exit %d, %q; want exit 2 and how to pass the token instead", args[2:], code, out)
		}
		if strings.Contains(out, token) {
			t.Fatalf("the refusal echoes the token: %q", out)
		}
	}
}

// TestAgentJoinsWithTokenFileOrEnvironment: an agent joins with a token
// file written by `castellanctl token create --out` (0600), and deletes it
// once spent; another joins with CASTELLAN_AGENT_JOIN_TOKEN. A 0644 token
// file (and one owned by another user) stops the agent with what to fix,
// and its token stays unspent.
func TestAgentJoinsWithTokenFileOrEnvironment(t *testing.T) {
	s := caStart(t)
	tokFile := filepath.Join(t.TempDir(), "join-token")
	s.ctlRun(t, "token", "create", "--node", "file-node", "--out", tokFile)
	if fi, err := os.Stat(tokFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("castellanctl token create --out: %v %v; want a 0600 file", fi, err)
	}
	a := secStartAgent(t, s, []string{"--join-token-file", tokFile})
	a.waitLog(t, 30*time.Second, attestedWithToken)
	a.waitLog(t, 10*time.Second, regexp.MustCompile(`join token spent; token file deleted`))
	if _, err := os.Stat(tokFile); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("spent token file still present: %v", err)
	}
	if !strings.Contains(a.log.String(), `"spiffe_id":"spiffe://cluster.local/castellan/agent/file-node"`) {
		t.Fatal("agent did not join as file-node")
	}

	envToken := strings.TrimSpace(s.ctlRun(t, "token", "create", "--node", "env-node"))
	b := secStartAgent(t, s, nil, "CASTELLAN_AGENT_JOIN_TOKEN="+envToken)
	b.waitLog(t, 30*time.Second, attestedWithToken)
	secOtherUserCannotReadToken(t, b.cmd.Process.Pid, envToken)

	open := filepath.Join(t.TempDir(), "open-token")
	s.ctlRun(t, "token", "create", "--node", "open-node", "--out", open)
	if err := os.Chmod(open, 0o644); err != nil {
		t.Fatal(err)
	}
	code, out := runAgentOnce(t, []string{"--server-address", s.addr, "--trust-bundle", filepath.Join(s.dataDir, "bundle.pem"),
		"--data-dir", t.TempDir(), "--socket", filepath.Join(t.TempDir(), "a.sock"), "--http-listen", "127.0.0.1:0",
		"--join-token-file", open})
	if code != 1 || !strings.Contains(out, "has mode 0644") || !strings.Contains(out, "chmod 600") {
		t.Fatalf("0644 token file: exit %d, %q; want exit 1 naming the mode and the fix", code, out)
	}
	if os.Geteuid() == 0 {
		if err := os.Chmod(open, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(open, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		code, out = runAgentOnce(t, []string{"--data-dir", t.TempDir(), "--join-token-file", open})
		if code != 1 || !strings.Contains(out, "owned by uid 65534") {
			t.Fatalf("token file of another user: exit %d, %q; want exit 1 naming the owner", code, out)
		}
	}
	if strings.Contains(s.logs.String(), `"msg":"agent attested","node":"open-node"`) {
		t.Fatal("the refused token file's token reached the CA")
	}
}

// secOtherUserCannotReadToken checks, as another uid (65534, root only),
// what a local attacker sees of the agent's process: its command line is
// readable and holds no token; its environment is not readable.
func secOtherUserCannotReadToken(t *testing.T, pid int, token string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Log("not root: cannot read /proc as another user; skipping that check")
		return
	}
	asNobody := func(file string) (string, error) {
		cmd := exec.Command("cat", fmt.Sprintf("/proc/%d/%s", pid, file))
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := asNobody("cmdline"); err != nil || !strings.Contains(out, "castellan-agent") || strings.Contains(out, token) {
		t.Fatalf("another user reading the agent's cmdline: %v %q; want it readable and without the token", err, out)
	}
	if out, err := asNobody("environ"); err == nil || strings.Contains(out, token) {
		t.Fatalf("another user read the agent's environment: %q", out)
	}
}

// TestJoinTokenReuseIsRefusedLoggedAndCounted: whoever uses a join token
// second — here over the CA's gRPC API, then a real agent given the spent
// token — is refused with Unauthenticated; the CA counts each reuse in
// castellan_join_token_reuse_total and logs a warning with the node and
// the token's ID, never the token; the agent does not retry it.
func TestJoinTokenReuseIsRefusedLoggedAndCounted(t *testing.T) {
	s := caStart(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	trust, err := x509bundle.Load(td, filepath.Join(s.dataDir, "bundle.pem"))
	if err != nil {
		t.Fatal(err)
	}
	anon := caDial(t, s.addr, credentials.NewTLS(tlsconfig.TLSClientConfig(trust,
		tlsconfig.AuthorizeID(spiffeid.RequireFromPath(td, "/castellan/server")))))
	token := strings.TrimSpace(s.ctlRun(t, "token", "create", "--node", "victim-node"))
	metrics := "http://" + s.httpAddr + "/metrics"
	if v := metricValue(caHTTPGet(t, metrics), "castellan_join_token_reuse_total"); v != 0 {
		t.Fatalf("castellan_join_token_reuse_total before any use = %v, want 0", v)
	}
	_, csr := caCSR(t, "")
	if _, err := anon.AttestAgent(ctx, &cav1.AttestAgentRequest{
		Attestation: &cav1.AttestAgentRequest_JoinToken{JoinToken: token}, Csr: csr}); err != nil {
		t.Fatalf("first use: %v", err)
	}
	_, csr2 := caCSR(t, "")
	_, err = anon.AttestAgent(ctx, &cav1.AttestAgentRequest{
		Attestation: &cav1.AttestAgentRequest_JoinToken{JoinToken: token}, Csr: csr2})
	if st := status.Convert(err); st.Code() != codes.Unauthenticated || !strings.Contains(st.Message(), "already used") ||
		!strings.Contains(st.Message(), "victim-node") {
		t.Fatalf("second use: %v; want Unauthenticated saying the token was already used for victim-node", err)
	}
	if v := metricValue(caHTTPGet(t, metrics), "castellan_join_token_reuse_total"); v != 1 {
		t.Fatalf("castellan_join_token_reuse_total = %v, want 1", v)
	}
	warn := secReuseWarnings(t, s)
	if len(warn) != 1 || warn[0]["node"] != "victim-node" || len(warn[0]["token_id"].(string)) != 12 {
		t.Fatalf("reuse warnings %v; want one, for victim-node, with a token ID", warn)
	}
	if strings.Contains(s.logs.String(), token) || strings.Contains(s.logs.String(), token[4:]) {
		t.Fatal("the CA's log contains the token")
	}

	a := secStartAgent(t, s, nil, "CASTELLAN_AGENT_JOIN_TOKEN="+token)
	a.waitLog(t, 30*time.Second, regexp.MustCompile(`the CA refused the join token.*Unauthenticated.*already used`))
	if strings.Contains(a.log.String(), "bootstrap with the CA failed; retrying") {
		t.Fatal("the agent retries a refused join token")
	}
	if v := metricValue(caHTTPGet(t, metrics), "castellan_join_token_reuse_total"); v != 2 {
		t.Fatalf("castellan_join_token_reuse_total after the agent's attempt = %v, want 2", v)
	}
}

// secReuseWarnings returns the CA's join-token reuse warnings.
func secReuseWarnings(t *testing.T, s *caServer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(s.logs.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil {
			continue
		}
		if msg, _ := rec["msg"].(string); rec["level"] == "WARN" && strings.Contains(msg, "possible theft") {
			out = append(out, rec)
		}
	}
	return out
}

// TestEntryCreateRefusesUnixEntryWithoutUser: a unix:path-only entry is
// refused (InvalidArgument, saying to add unix:uid or opt in); with
// --allow-any-user it is stored, castellanctl warns on stderr, listings
// flag it, and the node's agent logs a warning when it receives it.
func TestEntryCreateRefusesUnixEntryWithoutUser(t *testing.T) {
	s := caStart(t)
	const id = "spiffe://cluster.local/ns/default/sa/open"
	tokFile := filepath.Join(t.TempDir(), "tok")
	s.ctlRun(t, "token", "create", "--node", "any-node", "--out", tokFile)
	a := secStartAgent(t, s, []string{"--join-token-file", tokFile})
	a.waitLog(t, 30*time.Second, attestedWithToken)

	sock := filepath.Join(s.dataDir, "admin.sock")
	create := []string{"--admin-socket", sock, "entry", "create", "--spiffe-id", id, "--node", "any-node",
		"--selector", "unix:path:/usr/bin/app", "-o", "json"}
	out, errOut, err := s.ctlTry(create...)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(errOut, "InvalidArgument") ||
		!strings.Contains(errOut, "unix:uid") || !strings.Contains(errOut, "--allow-any-user") {
		t.Fatalf("path-only entry: %v, stdout %q, stderr %q; want exit 1, InvalidArgument, how to fix", err, out, errOut)
	}
	if list := s.ctlRun(t, "entry", "list", "-o", "json"); strings.Contains(list, id) {
		t.Fatalf("the refused entry was stored:\n%s", list)
	}
	out, errOut, err = s.ctlTry(append(create, "--allow-any-user")...)
	if err != nil || !strings.Contains(errOut, "WARNING") || !strings.Contains(errOut, "ANY local user") {
		t.Fatalf("--allow-any-user: %v, stderr %q; want success and a warning", err, errOut)
	}
	var created []struct {
		ID           string `json:"id"`
		AllowAnyUser bool   `json:"allow_any_user"`
	}
	if err := json.Unmarshal([]byte(out), &created); err != nil || len(created) != 1 || !created[0].AllowAnyUser {
		t.Fatalf("created entry %q (%v); want allow_any_user true", out, err)
	}
	if list := s.ctlRun(t, "entry", "list"); !strings.Contains(list, "(ANY USER)") {
		t.Fatalf("entry list does not flag the entry:\n%s", list)
	}
	a.waitLog(t, 30*time.Second, regexp.MustCompile(`"level":"WARN","msg":"entry lets ANY local user[^\n]*"entry_id":"`+created[0].ID+`"`))

	// Bound to a user, the same executable needs no opt-in, and refuses it.
	bound := []string{"entry", "create", "--spiffe-id", id, "--node", "any-node", "--selector", "unix:path:/usr/bin/app",
		"--selector", "unix:uid:" + strconv.Itoa(os.Getuid())}
	if _, errOut, err := s.ctlTry(append([]string{"--admin-socket", sock}, bound...)...); err != nil || strings.Contains(errOut, "WARNING") {
		t.Fatalf("entry with unix:uid: %v %q; want stored without a warning", err, errOut)
	}
	if _, errOut, err := s.ctlTry(append([]string{"--admin-socket", sock}, append(bound, "--selector", "unix:gid:0", "--allow-any-user")...)...); err == nil ||
		!strings.Contains(errOut, "drop --allow-any-user") {
		t.Fatalf("--allow-any-user with a uid: %v %q; want refused", err, errOut)
	}
}

// TestSignRefusesTTLAboveEntryTTLOverGRPC: an agent (attested with a join
// token, calling over mTLS with its agent SVID) that asks for more than
// its entry's TTL is refused with InvalidArgument naming the entry and its
// TTL; at the entry's TTL, or asking none, it gets exactly that lifetime.
func TestSignRefusesTTLAboveEntryTTLOverGRPC(t *testing.T) {
	s := caStart(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	const node, appID = "ttl-node", "spiffe://cluster.local/ns/default/sa/ttl"
	var created []struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal([]byte(s.ctlRun(t, "entry", "create", "--spiffe-id", appID, "--node", node,
		"--selector", "unix:uid:1000", "--ttl", "10m", "-o", "json")), &created); err != nil || len(created) != 1 {
		t.Fatalf("entry create: %v %v", created, err)
	}
	trust, err := x509bundle.Load(td, filepath.Join(s.dataDir, "bundle.pem"))
	if err != nil {
		t.Fatal(err)
	}
	serverID := spiffeid.RequireFromPath(td, "/castellan/server")
	anon := caDial(t, s.addr, credentials.NewTLS(tlsconfig.TLSClientConfig(trust, tlsconfig.AuthorizeID(serverID))))
	agentKey, agentCSR := caCSR(t, "")
	att, err := anon.AttestAgent(ctx, &cav1.AttestAgentRequest{Csr: agentCSR,
		Attestation: &cav1.AttestAgentRequest_JoinToken{JoinToken: strings.TrimSpace(s.ctlRun(t, "token", "create", "--node", node))}})
	if err != nil {
		t.Fatal(err)
	}
	agentSVID := caVerify(t, att.GetSvid(), agentKey, trust, "spiffe://cluster.local/castellan/agent/"+node)
	agent := caDial(t, s.addr, credentials.NewTLS(tlsconfig.MTLSClientConfig(agentSVID, trust, tlsconfig.AuthorizeID(serverID))))

	key, csr := caCSR(t, appID)
	for _, asked := range []int64{601, 3600, 86400} {
		_, err := agent.SignX509SVID(ctx, &cav1.SignX509SVIDRequest{Csr: csr, EntryId: created[0].ID, TtlSeconds: asked})
		if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "registration entry "+created[0].ID) ||
			!strings.Contains(st.Message(), "10m0s") {
			t.Fatalf("TTL %ds above the entry's 10m: %v; want InvalidArgument naming the entry and 10m0s", asked, err)
		}
	}
	for _, asked := range []int64{600, 0} {
		resp, err := agent.SignX509SVID(ctx, &cav1.SignX509SVIDRequest{Csr: csr, EntryId: created[0].ID, TtlSeconds: asked})
		if err != nil {
			t.Fatalf("TTL %ds: %v", asked, err)
		}
		svid := caVerify(t, resp.GetSvid(), key, trust, appID)
		life := time.Until(svid.Certificates[0].NotAfter)
		if life > 10*time.Minute || life < 9*time.Minute {
			t.Fatalf("TTL %ds: SVID expires in %v, want about 10m", asked, life)
		}
	}
}
