// Package proc owns the programs of the test cluster (package cluster):
// finding them (installing the Debian packages of missing ones), running
// short commands bounded in time, and supervising the long-running
// components, each in its own process group with its output in a log file.
package proc

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Process is one component the cluster runs, in its own process group, its
// output in a log file.
type Process struct {
	Name    string // the component's name, in messages
	LogFile string // where its stdout and stderr go
	cmd     *exec.Cmd
	exited  chan struct{} // closed once cmd has exited
	err     error         // valid after exited is closed
}

// Start starts bin with args; its stdout and stderr go to logFile.
// The process dies with the test binary (Pdeathsig), so a killed test does
// not leave a control plane running.
func Start(name, logFile, bin string, args ...string) (*Process, error) {
	logf, err := os.Create(logFile)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = childEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &Process{Name: name, cmd: cmd, LogFile: logFile, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// Running reports an error if the process has exited.
func (p *Process) Running() error {
	select {
	case <-p.exited:
		return fmt.Errorf("%s exited (%v); log tail:\n%s", p.Name, p.err, tail(p.LogFile, 30))
	default:
		return nil
	}
}

// Pid returns the process's ID while it runs, or 0 once it has exited.
func (p *Process) Pid() int {
	select {
	case <-p.exited:
		return 0
	default:
		return p.cmd.Process.Pid
	}
}

// Stop sends SIGTERM to the process group, then SIGKILL after grace, and
// waits (bounded) for the process to exit.
func (p *Process) Stop(grace time.Duration) error {
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(grace):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			return fmt.Errorf("%s (pid %d) did not exit after SIGKILL", p.Name, pgid)
		}
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL) // stragglers in the group
	return nil
}

// tail returns up to the last n lines of the file at path.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// ErrorsAndTail returns the last nErr klog error or fatal lines ("E..."
// or "F...") of the log at path, then its last nTail lines.
func ErrorsAndTail(path string, nErr, nTail int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	var errs []string
	for _, l := range lines {
		if len(l) > 1 && (l[0] == 'E' || l[0] == 'F') && l[1] >= '0' && l[1] <= '9' {
			errs = append(errs, trim(l))
		}
	}
	if len(errs) > nErr {
		errs = errs[len(errs)-nErr:]
	}
	if len(lines) > nTail {
		lines = lines[len(lines)-nTail:]
	}
	for i := range lines {
		lines[i] = trim(lines[i])
	}
	return strings.Join(errs, "\n") + "\n  ...\n" + strings.Join(lines, "\n")
}

// trim shortens a log line to 400 bytes.
func trim(l string) string {
	if len(l) > 400 {
		return l[:400] + "..."
	}
	return l
}

// Run runs a short command, bounded by timeout, and returns its combined
// output, with the command line in the error.
func Run(timeout time.Duration, bin string, args ...string) (string, error) {
	return runEnv(timeout, nil, bin, args...)
}

// runEnv is Run with extra environment variables.
func runEnv(timeout time.Duration, extraEnv []string, bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	cmd.Env = append(childEnv(), extraEnv...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", bin, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}
