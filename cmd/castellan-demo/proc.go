package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// proc is one child process, started in its own process group so that a
// signal to the group reaches everything it started.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // exit status; read after done is closed
}

// exit reports a child that ended on its own.
type exit struct {
	name string
	err  error
}

// supervisor starts children and stops them all, newest first.
type supervisor struct {
	logDir string
	exits  chan exit

	mu    sync.Mutex
	procs []*proc
}

func newSupervisor(logDir string) *supervisor {
	return &supervisor{logDir: logDir, exits: make(chan exit, 16)}
}

// start runs path with args, its output appended to logDir/<name>.log. The
// child dies with the launcher even if the launcher is killed (Pdeathsig).
func (s *supervisor) start(name, path string, args ...string) (*proc, error) {
	logPath := s.logDir + "/" + name + ".log"
	out, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("castellan-demo: %w", err)
	}
	defer out.Close()
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("castellan-demo: start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
		select {
		case s.exits <- exit{name: name, err: p.err}:
		default:
		}
	}()
	s.mu.Lock()
	s.procs = append(s.procs, p)
	s.mu.Unlock()
	return p, nil
}

// pids returns the process ids of every child started, by name.
func (s *supervisor) pids() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.procs))
	for _, p := range s.procs {
		out[p.name] = p.cmd.Process.Pid
	}
	return out
}

// stopAll stops the children in reverse start order: SIGTERM to each
// process group, then SIGKILL to any group still alive after grace.
func (s *supervisor) stopAll(grace time.Duration) error {
	s.mu.Lock()
	procs := append([]*proc(nil), s.procs...)
	s.mu.Unlock()
	var errs []error
	for i := len(procs) - 1; i >= 0; i-- {
		if err := procs[i].stop(grace); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (p *proc) stop(grace time.Duration) error {
	pgid := p.cmd.Process.Pid
	select {
	case <-p.done:
		_ = syscall.Kill(-pgid, syscall.SIGKILL) // anything it left behind
		return nil
	default:
	}
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		return nil
	case <-time.After(grace):
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	<-p.done
	return fmt.Errorf("castellan-demo: %s did not stop within %s and was killed", p.name, grace)
}
