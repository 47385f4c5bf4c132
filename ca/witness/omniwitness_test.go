package witness_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/internal/freeport"
)

// omniwitnessBinary returns the omniwitness built by
// integration/omniwitness/build.sh, or skips t (fails it under
// CASTELLAN_REQUIRE_OMNIWITNESS=1, as make test sets).
func omniwitnessBinary(t testing.TB) string {
	t.Helper()
	p := os.Getenv("CASTELLAN_OMNIWITNESS")
	why := ""
	if p == "" {
		why = "CASTELLAN_OMNIWITNESS is not set"
	} else if fi, err := os.Stat(p); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		why = fmt.Sprintf("CASTELLAN_OMNIWITNESS=%s is not an executable", p)
	}
	if why == "" {
		return p
	}
	msg := why + " (build it with CASTELLAN_OMNIWITNESS=$(./integration/omniwitness/build.sh))"
	if os.Getenv("CASTELLAN_REQUIRE_OMNIWITNESS") == "1" {
		t.Fatalf("%s; CASTELLAN_REQUIRE_OMNIWITNESS=1 forbids skipping", msg)
	}
	t.Skipf("%s; skipping", msg)
	return ""
}

// omniwitness is a running transparency-dev omniwitness process: its own
// key, its state in a SQLite file in a temporary directory, witnessing
// the logs it was started with, on a free 127.0.0.1 port. Stopped (killed)
// by t.Cleanup.
type omniwitness struct {
	t      testing.TB
	bin    string
	dir    string
	c      *cosigner
	url    string
	cmd    *exec.Cmd
	exited chan struct{}
	out    *lockedBuffer
}

// lockedBuffer collects a process's output for failure messages.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startOmniwitness configures and starts a witness named keyName that
// witnesses the origin testOrigin under each of logVKeys (an origin has
// one key; several keys need several origins, so one is expected here).
func startOmniwitness(t testing.TB, keyName, logVKey string) *omniwitness {
	t.Helper()
	w := &omniwitness{t: t, bin: omniwitnessBinary(t), dir: t.TempDir(), c: newCosigner(t, keyName)}
	logs := fmt.Sprintf("Logs:\n  - Origin: %s\n    PublicKey: %s\n", testOrigin, logVKey)
	writeFile(t, filepath.Join(w.dir, "logs.yaml"), logs)
	writeFile(t, filepath.Join(w.dir, "witness.key"), w.c.skey)
	w.start()
	t.Cleanup(w.stop)
	return w
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// start runs the process on a free port and waits until it accepts
// connections; a port taken between choosing and binding is retried.
func (w *omniwitness) start() {
	w.t.Helper()
	for try := 1; ; try++ {
		addr := freeAddr(w.t)
		err := w.run(addr)
		if err == nil {
			w.url = "http://" + addr
			return
		}
		if try == 3 {
			w.t.Fatalf("omniwitness did not start: %v\noutput:\n%s", err, w.out)
		}
	}
}

// run starts the process listening on addr and waits (at most 30s) for it
// to accept connections.
func (w *omniwitness) run(addr string) error {
	w.out = &lockedBuffer{}
	w.cmd = exec.Command(w.bin,
		"--listen="+addr,
		"--metrics_listen=", // no metrics listener
		"--db_file="+filepath.Join(w.dir, "witness.db"),
		"--private_key_path="+filepath.Join(w.dir, "witness.key"),
		"--additional_logs="+filepath.Join(w.dir, "logs.yaml"),
		"--logtostderr", "--v=1")
	w.cmd.Stdout, w.cmd.Stderr = w.out, w.out
	w.cmd.Env = []string{"HOME=" + w.dir, "PATH=/usr/bin:/bin"}
	if err := w.cmd.Start(); err != nil {
		w.t.Fatalf("start omniwitness: %v", err)
	}
	w.exited = make(chan struct{})
	go func() { _ = w.cmd.Wait(); close(w.exited) }()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-w.exited:
			return fmt.Errorf("omniwitness exited: %v", w.cmd.ProcessState)
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			_ = c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	w.stop()
	return errors.New("not accepting connections after 30s")
}

// stop kills the process and waits for it.
func (w *omniwitness) stop() {
	if w.cmd == nil || w.cmd.Process == nil {
		return
	}
	select {
	case <-w.exited:
	default:
		_ = w.cmd.Process.Kill()
		<-w.exited
	}
}

// restart stops the witness and starts it again on the same state; its URL
// may change.
func (w *omniwitness) restart() {
	w.t.Helper()
	w.stop()
	w.start()
}

// spec is the witness's entry for a policy.
func (w *omniwitness) spec(name string) witnessSpec {
	return witnessSpec{name: name, url: w.url, c: w.c}
}

// freeAddr returns a 127.0.0.1 address with a port free a moment ago.
func freeAddr(t testing.TB) string {
	t.Helper()
	addr, err := freeport.Addr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// testContext is bounded so that a hung witness fails the test.
func testContext(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// mustContain fails t unless err's message holds every part.
func mustContain(t testing.TB, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error; want one containing %q", parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Fatalf("error %q does not contain %q", err, p)
		}
	}
}
