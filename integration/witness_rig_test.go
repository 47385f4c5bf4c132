package integration_test

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"crypto/rand"

	"github.com/castellan-dev/castellan/ca/ledger/logkey"
	"github.com/castellan-dev/castellan/integration/testbin"
	"github.com/castellan-dev/castellan/internal/witness"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"golang.org/x/mod/sumdb/note"
)

// witnessOrigin is the origin castellan-server gives a new ledger of
// trust domain cluster.local.
const witnessOrigin = "cluster.local/castellan/ledger"

// omniBinary returns the omniwitness built by
// integration/omniwitness/build.sh, or skips t (fails it under
// CASTELLAN_REQUIRE_OMNIWITNESS=1).
func omniBinary(t *testing.T) string {
	t.Helper()
	p := os.Getenv("CASTELLAN_OMNIWITNESS")
	if p == "" {
		home, _ := os.UserHomeDir()
		p = filepath.Join(home, ".cache", "castellan", "bin", "omniwitness")
	}
	if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
		return p
	}
	msg := fmt.Sprintf("no omniwitness at %s (build it with ./integration/omniwitness/build.sh)", p)
	if os.Getenv("CASTELLAN_REQUIRE_OMNIWITNESS") == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// omni is a real omniwitness process on a fixed loopback address (so a
// restarted witness is where the CA's --witness flag says), witnessing
// one log.
type omni struct {
	t      *testing.T
	bin    string
	dir    string
	addr   string
	vkey   string // cosignature/v1 verifier key
	cmd    *exec.Cmd
	exited chan struct{}
	out    *agentLog
}

// startOmni starts a witness of the log witnessOrigin with key logVKey.
func startOmni(t *testing.T, logVKey string) *omni {
	t.Helper()
	w := &omni{t: t, bin: omniBinary(t), dir: t.TempDir(), addr: freeAddr(t)}
	skey, vkey := witnessKey(t, "witness.test/w1")
	w.vkey = vkey
	logs := fmt.Sprintf("Logs:\n  - Origin: %s\n    PublicKey: %s\n", witnessOrigin, logVKey)
	for name, content := range map[string]string{"logs.yaml": logs, "witness.key": skey} {
		if err := os.WriteFile(filepath.Join(w.dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	w.start()
	t.Cleanup(w.stop)
	return w
}

// witnessKey returns a witness's note signer key (as omniwitness reads it)
// and the matching cosignature/v1 verifier key (type 0x04).
func witnessKey(t *testing.T, name string) (skey, vkey string) {
	t.Helper()
	skey, _, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.SplitN(skey, "+", 5) // PRIVATE+KEY+name+hash+base64; base64 may hold '+'
	raw, err := base64.StdEncoding.DecodeString(parts[4])
	if err != nil || len(raw) != 1+ed25519.SeedSize {
		t.Fatalf("unexpected note key form %q", skey)
	}
	pub := ed25519.NewKeyFromSeed(raw[1:]).Public().(ed25519.PublicKey)
	typed := append([]byte{0x04}, pub...)
	h := sha256.Sum256(append([]byte(name+"\n"), typed...))
	return skey, fmt.Sprintf("%s+%08x+%s", name, binary.BigEndian.Uint32(h[:4]), base64.StdEncoding.EncodeToString(typed))
}

// flag is the witness's --witness value.
func (w *omni) flag(name string) string { return name + "=http://" + w.addr + "+" + w.vkey }

// start runs the witness and waits (at most 30s) for its port.
func (w *omni) start() {
	w.t.Helper()
	w.out = &agentLog{}
	w.cmd = exec.Command(w.bin, "--listen="+w.addr, "--metrics_listen=",
		"--db_file="+filepath.Join(w.dir, "witness.db"),
		"--private_key_path="+filepath.Join(w.dir, "witness.key"),
		"--additional_logs="+filepath.Join(w.dir, "logs.yaml"), "--logtostderr")
	w.cmd.Stdout, w.cmd.Stderr = w.out, w.out
	w.cmd.Env = []string{"HOME=" + w.dir, "PATH=/usr/bin:/bin"}
	if err := w.cmd.Start(); err != nil {
		w.t.Fatal(err)
	}
	w.exited = make(chan struct{})
	go func() { _ = w.cmd.Wait(); close(w.exited) }()
	agentEventually(w.t, 30*time.Second, "omniwitness port", func() bool {
		select {
		case <-w.exited:
			w.t.Fatalf("omniwitness exited:\n%s", w.out)
		default:
		}
		c, err := net.DialTimeout("tcp", w.addr, 200*time.Millisecond)
		if err == nil {
			_ = c.Close()
		}
		return err == nil
	})
}

// stop kills the witness and waits for it.
func (w *omni) stop() {
	if w.cmd == nil || w.exited == nil {
		return
	}
	select {
	case <-w.exited:
	default:
		_ = w.cmd.Process.Kill()
		<-w.exited
	}
}

// policy is the one-witness policy the CA and the agents use.
func (w *omni) policy(t *testing.T) *witness.Policy {
	t.Helper()
	p, err := witness.ParsePolicy(1, []string{w.flag("w1")})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// witnessRig is a real castellan-server and castellan-agent whose log is
// witnessed by a real omniwitness.
type witnessRig struct {
	t                          *testing.T
	server, agent, ctl         string
	srvDir, agentDir, sock     string
	listen, srvHTTP, agentHTTP string
	srvCmd, agentCmd           *exec.Cmd
	srvLog, agentLog           *agentLog
	logVKey                    string
	agentServer                string // the agent's --server-address ("": the server's --listen)
}

// newWitnessRig makes the server's data directory with a log key for
// witnessOrigin already in it (so the witness can be told the key first).
func newWitnessRig(t *testing.T) *witnessRig {
	t.Helper()
	if testing.Short() {
		t.Skip("runs the real binaries and an omniwitness")
	}
	var b testbin.Builder
	t.Cleanup(b.Cleanup)
	dir := t.TempDir()
	r := &witnessRig{t: t, server: b.Path(t, "castellan-server"), agent: b.Path(t, "castellan-agent"), ctl: b.Path(t, "castellanctl"),
		srvDir: filepath.Join(dir, "srv"), agentDir: filepath.Join(dir, "agent"), sock: filepath.Join(dir, "agent.sock"),
		listen: freeAddr(t), srvHTTP: freeAddr(t), agentHTTP: freeAddr(t)}
	if err := os.Mkdir(r.srvDir, 0o700); err != nil {
		t.Fatal(err)
	}
	vkey, err := logkey.GenerateKeyFile(filepath.Join(r.srvDir, "ledger.db.key"), witnessOrigin)
	if err != nil {
		t.Fatal(err)
	}
	r.logVKey = vkey
	return r
}

// startServer starts castellan-server with extra flags and waits for its
// admin socket.
func (r *witnessRig) startServer(extra ...string) {
	r.t.Helper()
	_ = os.Remove(filepath.Join(r.srvDir, "admin.sock"))
	args := append([]string{"--data-dir", r.srvDir, "--listen", r.listen, "--http-listen", r.srvHTTP,
		"--default-ttl", "1h", "--log-level", "debug"}, extra...)
	cmd := exec.Command(r.server, args...)
	r.srvLog = &agentLog{}
	cmd.Stderr = r.srvLog
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.srvCmd = cmd
	r.t.Cleanup(func() {
		stopCmd(cmd)
		if r.t.Failed() {
			r.t.Logf("castellan-server log:\n%s", r.srvLog)
		}
	})
	agentEventually(r.t, 30*time.Second, "server admin socket", func() bool {
		_, err := os.Stat(filepath.Join(r.srvDir, "admin.sock"))
		return err == nil
	})
}

// startAgent starts castellan-agent with extra flags.
func (r *witnessRig) startAgent(token string, extra ...string) {
	r.t.Helper()
	server := r.listen
	if r.agentServer != "" {
		server = r.agentServer
	}
	args := append([]string{"--server-address", server, "--trust-bundle", filepath.Join(r.srvDir, "bundle.pem"),
		"--data-dir", r.agentDir, "--socket", r.sock, "--http-listen", r.agentHTTP, "--log-level", "debug"}, extra...)
	cmd := exec.Command(r.agent, args...)
	if token != "" {
		cmd.Env = append(os.Environ(), "CASTELLAN_AGENT_JOIN_TOKEN="+token)
	}
	r.agentLog = &agentLog{}
	cmd.Stderr = r.agentLog
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.agentCmd = cmd
	log := r.agentLog
	r.t.Cleanup(func() {
		stopCmd(cmd)
		if r.t.Failed() {
			r.t.Logf("castellan-agent log:\n%s", log)
		}
	})
}

// stopCmd stops a process with SIGTERM, then SIGKILL after 10s.
func stopCmd(cmd *exec.Cmd) {
	if cmd == nil || cmd.ProcessState != nil {
		return
	}
	_ = cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

func (r *witnessRig) ctlRun(args ...string) string {
	r.t.Helper()
	out, err := exec.Command(r.ctl, append([]string{"--admin-socket", filepath.Join(r.srvDir, "admin.sock")}, args...)...).CombinedOutput()
	if err != nil {
		r.t.Fatalf("castellanctl %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// enroll creates a join token for node and an entry for this process's
// uid, and returns the token and the entry's SPIFFE ID.
func (r *witnessRig) enroll(node, path string) (string, spiffeid.ID) {
	r.t.Helper()
	token := strings.Fields(r.ctlRun("token", "create", "--node", node, "--ttl", "10m"))[0]
	id := spiffeid.RequireFromString("spiffe://cluster.local" + path)
	r.ctlRun("entry", "create", "--spiffe-id", id.String(), "--node", node,
		"--selector", fmt.Sprintf("unix:uid:%d", os.Getuid()))
	return token, id
}

// agentLogFlags are the agent flags of a log policy under witness w.
func (r *witnessRig) agentLogFlags(policy string, w *omni) []string {
	return []string{"--log-policy", policy, "--log-key", r.logVKey, "--witness", w.flag("w1"), "--log-wait", "3s"}
}

// fetchSVID fetches the workload's SVID from the agent within d; nil if
// the agent serves none by then.
func (r *witnessRig) fetchSVID(d time.Duration) *x509svid.SVID {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(r.t.Context(), d)
	defer cancel()
	for ctx.Err() == nil {
		if _, err := os.Stat(r.sock); err == nil {
			if s, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr("unix://"+r.sock)); err == nil {
				return s
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// httpGet returns the status and body of GET url.
func httpGet(t *testing.T, url string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, b
}

// witnessedCheckpoint waits (at most 30s) for /log/checkpoint to serve a
// checkpoint of at least minSize that satisfies w's policy, and returns it.
func (r *witnessRig) witnessedCheckpoint(w *omni, minSize uint64) *witness.Verified {
	r.t.Helper()
	logKey, err := note.NewVerifier(r.logVKey)
	if err != nil {
		r.t.Fatal(err)
	}
	var v *witness.Verified
	var last string
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		code, body := httpGet(r.t, "http://"+r.srvHTTP+"/log/checkpoint")
		if code == http.StatusOK {
			v, err = w.policy(r.t).Verify(body, witnessOrigin, logKey, time.Now())
			if err == nil && v.Checkpoint.Size >= minSize {
				return v
			}
			last = fmt.Sprintf("%v: %s", err, body)
		} else {
			last = fmt.Sprintf("%d %s", code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.t.Fatalf("no witnessed checkpoint of size >= %d within 30s; last: %s", minSize, last)
	return nil
}

// metric returns the value of an agent metric sample, "" if absent.
func (r *witnessRig) metric(sample string) string {
	r.t.Helper()
	_, b := httpGet(r.t, "http://"+r.agentHTTP+"/metrics")
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			return v
		}
	}
	return ""
}
