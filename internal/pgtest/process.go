package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// start runs the postmaster as a child process and waits until it
// accepts connections.
func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return errors.New("server already running")
	}
	logf, err := os.OpenFile(s.logFile(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(filepath.Join(s.bin, "postgres"), s.args()...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = s.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	// Pdeathsig: a test binary that dies (a go test timeout) takes its
	// server with it (SIGQUIT: immediate shutdown, backends included).
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred, Setpgid: true, Pdeathsig: syscall.SIGQUIT}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	if err := s.waitReady(done); err != nil {
		cmd.Process.Signal(syscall.SIGQUIT)
		waitDone(done, quitTimeout)
		cmd.Process.Kill()
		<-done
		return err
	}
	s.cmd, s.done = cmd, done
	return nil
}

// waitReady connects until the server answers, the postmaster exits or
// readyTimeout passes.
func (s *Server) waitReady(done <-chan struct{}) error {
	deadline := time.Now().Add(readyTimeout)
	var err error
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return fmt.Errorf("postgres exited during start:\n%s", logTail(s.Log()))
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		var c *pgx.Conn
		if c, err = pgx.Connect(ctx, s.DSN("postgres")); err == nil {
			err = c.Ping(ctx)
			c.Close(ctx)
		}
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-done:
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("postgres not ready after %s: %v\n%s", readyTimeout, err, logTail(s.Log()))
}

func waitDone(done <-chan struct{}, d time.Duration) bool {
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// Stop shuts the server down as `pg_ctl stop -m fast` does (SIGINT:
// sessions are ended, a checkpoint written), escalating to `-m immediate`
// (SIGQUIT) and at last SIGKILL if it does not exit in time. It returns
// once the postmaster and all its backends have exited. Stopping a
// stopped server does nothing.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return nil
	}
	children := s.children()
	p := s.cmd.Process
	p.Signal(syscall.SIGINT)
	if !waitDone(s.done, fastTimeout) {
		p.Signal(syscall.SIGQUIT)
		if !waitDone(s.done, quitTimeout) {
			p.Kill()
			<-s.done
		}
	}
	s.cmd = nil
	return reap(children)
}

// Kill sends SIGKILL to the postmaster, as a crash would, and returns
// once it and its backends (which notice their postmaster's death) have
// exited. Restart brings the server back, recovering from its WAL.
func (s *Server) Kill() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return errors.New("pgtest: kill: server not running")
	}
	children := s.children()
	s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
	return reap(children)
}

// Restart stops the server if it runs, then starts it again on the same
// port and data directory.
func (s *Server) Restart() error {
	if err := s.Stop(); err != nil {
		return err
	}
	if err := s.start(); err != nil {
		return fmt.Errorf("pgtest: restart: %w", err)
	}
	return nil
}

// Close stops the server and removes its directory if New made it.
func (s *Server) Close() error {
	err := s.Stop()
	s.removeDir()
	return err
}

// PID is the postmaster's process ID, 0 when stopped.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// proc identifies a process across PID reuse: its PID and start time.
type proc struct {
	pid   int
	start string
}

// children lists the postmaster's child processes (its backends and
// auxiliary processes). s.mu is held.
func (s *Server) children() []proc {
	return childrenOf(s.cmd.Process.Pid)
}

func childrenOf(ppid int) []proc {
	entries, _ := os.ReadDir("/proc")
	var out []proc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, ok := procStat(pid); ok && st.ppid == ppid {
			out = append(out, proc{pid, st.start})
		}
	}
	return out
}

type stat struct {
	state byte
	ppid  int
	start string
}

// procStat parses /proc/pid/stat: state, parent and start time.
func procStat(pid int) (stat, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return stat{}, false
	}
	i := bytes.LastIndexByte(b, ')') // the command name may hold spaces
	if i < 0 {
		return stat{}, false
	}
	f := bytes.Fields(b[i+1:]) // f[0] is field 3 (state)
	if len(f) < 20 {
		return stat{}, false
	}
	ppid, _ := strconv.Atoi(string(f[1]))
	return stat{state: f[0][0], ppid: ppid, start: string(f[19])}, true
}

// alive reports whether p still runs (a zombie does not).
func (p proc) alive() bool {
	st, ok := procStat(p.pid)
	return ok && st.start == p.start && st.state != 'Z'
}

// reap waits, bounded, for the processes to exit, then SIGKILLs the
// ones left.
func reap(ps []proc) error {
	deadline := time.Now().Add(orphanWait)
	for _, p := range ps {
		for p.alive() && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}
	var left []int
	for _, p := range ps {
		if p.alive() {
			syscall.Kill(p.pid, syscall.SIGKILL)
			left = append(left, p.pid)
		}
	}
	if left != nil {
		return fmt.Errorf("pgtest: backends %v outlived their postmaster by %s; killed", left, orphanWait)
	}
	return nil
}

// Processes lists the running postmaster and its children.
func (s *Server) Processes() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return nil
	}
	out := []int{s.cmd.Process.Pid}
	for _, c := range s.children() {
		out = append(out, c.pid)
	}
	return out
}
