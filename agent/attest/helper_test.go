package attest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// helperModeEnv selects a helper behaviour of the test binary: "cmd"
// connects to helperEnv's socket and obeys commands on stdin; "idle" holds
// whatever descriptors it inherited until stdin closes (or a minute).
const helperModeEnv = "CASTELLAN_ATTEST_HELPER_MODE"

// helperExecEnv names the executable the "exec" command runs.
const helperExecEnv = "CASTELLAN_ATTEST_HELPER_EXEC"

// commandHelper connects, prints "ready", then runs one command per stdin
// line, printing "ok" after each:
//
//	share   start a child that inherits the connection; keep it too
//	handoff start a child that inherits the connection; close ours
//	exec    keep the connection across execve of this binary (idle mode)
//	setuid  switch to uid and gid 65534
func commandHelper(sock string) int {
	conn, err := net.Dial("unix", sock)
	if err != nil {
		return 3
	}
	f, err := conn.(*net.UnixConn).File() // a dup, close-on-exec
	if err != nil {
		return 3
	}
	_ = conn.Close()
	fmt.Println("ready")
	var lifelines []*os.File // write ends of the children's stdin, kept open
	defer func() { _ = lifelines }()
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		switch in.Text() {
		case "share", "handoff":
			w, err := startHolder(f)
			if err != nil {
				return 4
			}
			lifelines = append(lifelines, w)
			if in.Text() == "handoff" {
				_ = f.Close()
			}
		case "exec":
			if _, err := unix.FcntlInt(f.Fd(), unix.F_SETFD, 0); err != nil {
				return 5
			}
			exe := os.Getenv(helperExecEnv)
			env := append(withoutEnv(helperModeEnv), helperModeEnv+"=idle")
			_ = syscall.Exec(exe, []string{exe}, env)
			return 6
		case "setuid":
			if syscall.Setgid(65534) != nil || syscall.Setuid(65534) != nil {
				return 7
			}
		}
		fmt.Println("ok")
	}
	return 0
}

// startHolder starts an idle child holding f and waits until it runs. The
// child's stdin is a pipe whose write end this process keeps (and never
// closes), so the child exits when this process does.
func startHolder(f *os.File) (*os.File, error) {
	self, _ := os.Executable()
	cmd := exec.Command(self)
	cmd.Env = append(withoutEnv(helperModeEnv), helperModeEnv+"=idle")
	cmd.ExtraFiles = []*os.File{f}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdin = r
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	_, err = bufio.NewReader(out).ReadString('\n')
	return w, err
}

// idleHelper prints "ok" and holds its descriptors until stdin closes or a
// minute passes.
func idleHelper() {
	fmt.Println("ok")
	done := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Minute):
	}
	os.Exit(0)
}

// cmdHelper is a running commandHelper.
type cmdHelper struct {
	t     testing.TB
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
}

// startCmdHelper starts exe as a command helper connected to sock and
// waits until it has connected.
// The "exec" command runs execTarget ("": exe itself).
func startCmdHelper(t testing.TB, exe, sock string, attr *syscall.SysProcAttr, execTarget string) *cmdHelper {
	t.Helper()
	if execTarget == "" {
		execTarget = exe
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), helperEnv+"="+sock, helperModeEnv+"=cmd", helperExecEnv+"="+execTarget)
	cmd.SysProcAttr = attr
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
	h := &cmdHelper{t: t, cmd: cmd, stdin: stdin, out: bufio.NewReader(out)}
	t.Cleanup(func() { _ = stdin.Close(); _ = cmd.Process.Kill(); _ = cmd.Wait() })
	h.expect("ready")
	return h
}

func (h *cmdHelper) expect(want string) {
	h.t.Helper()
	line, err := h.out.ReadString('\n')
	if strings.TrimSpace(line) != want {
		h.t.Fatalf("helper said %q (%v), want %q", line, err, want)
	}
}

// do sends a command and waits for it to be done.
func (h *cmdHelper) do(command string) {
	h.t.Helper()
	if _, err := fmt.Fprintln(h.stdin, command); err != nil {
		h.t.Fatal(err)
	}
	h.expect("ok")
}

// withoutEnv returns the environment without variable key.
func withoutEnv(key string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, key+"=") {
			env = append(env, kv)
		}
	}
	return env
}
