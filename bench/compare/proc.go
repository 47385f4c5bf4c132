package main

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/castellan-dev/castellan/internal/procstat"
)

// process is a CA server under test, its output kept in a log file.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
	err     error // valid once exited is closed
}

// start starts bin with args, writing its stdout and stderr to logPath.
func start(name, logPath, bin string, args ...string) (*process, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	// The server must not outlive the benchmark if it dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: start %s: %w", name, bin, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.exited)
	}()
	return p, nil
}

// alive returns an error if the process has exited.
func (p *process) alive() error {
	select {
	case <-p.exited:
		return fmt.Errorf("%s exited (%v); see %s", p.name, p.err, p.logPath)
	default:
		return nil
	}
}

// stop interrupts the process, kills it after 10s, and waits for it.
func (p *process) stop() {
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// cpu returns the CPU time (user + system, every thread) the process has
// used.
func (p *process) cpu() (time.Duration, error) {
	return procstat.CPU(p.cmd.Process.Pid)
}

// retry calls f every 200ms until it succeeds, p exits, or d passes.
func retry(p *process, d time.Duration, what string, f func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if aerr := p.alive(); aerr != nil {
			return fmt.Errorf("%s: %w", what, aerr)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not within %s: %w", what, d, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
