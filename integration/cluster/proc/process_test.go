package proc

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestStopEndsTheWholeProcessGroup starts a shell that leaves a child
// ignoring SIGTERM behind, as a component's helpers do, and checks that
// Stop ends both: the shell on SIGTERM, the child by the group's SIGKILL.
func TestStopEndsTheWholeProcessGroup(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "child.pid")
	p, err := Start("group", filepath.Join(dir, "group.log"), "/bin/sh", "-c",
		`(trap '' TERM; exec sleep 300) & echo $! > `+pidFile+`; wait`)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := Poll(ctx, 10*time.Millisecond, func() (bool, error) {
		b, err := os.ReadFile(pidFile)
		return err == nil && strings.HasSuffix(string(b), "\n"), nil
	}); err != nil {
		t.Fatalf("the child never started: %v", err)
	}
	b, _ := os.ReadFile(pidFile)
	child, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Running(); err != nil {
		t.Fatalf("Running before Stop: %v", err)
	}
	if err := p.Stop(time.Second); err != nil {
		t.Fatal(err)
	}
	if err := p.Running(); err == nil || !strings.Contains(err.Error(), "group exited") {
		t.Fatalf("Running after Stop = %v, want an error naming the exited process", err)
	}
	if p.Pid() != 0 {
		t.Fatalf("Pid after Stop = %d, want 0", p.Pid())
	}
	if err := Poll(ctx, 10*time.Millisecond, func() (bool, error) {
		return syscall.Kill(child, 0) == syscall.ESRCH, nil
	}); err != nil {
		t.Fatalf("the child %d outlived Stop: %v", child, err)
	}
}

// TestRunNamesTheCommandAndItsOutput checks that a failed command's error
// says which command failed and what it printed, and that the timeout ends
// a hung command.
func TestRunNamesTheCommandAndItsOutput(t *testing.T) {
	out, err := Run(10*time.Second, "/bin/sh", "-c", "echo nope; exit 3")
	if err == nil || !strings.Contains(err.Error(), "/bin/sh -c echo nope; exit 3") || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("Run error = %v, want the command line and its output", err)
	}
	if out != "nope\n" {
		t.Fatalf("Run output = %q", out)
	}
	begin := time.Now()
	if _, err := Run(200*time.Millisecond, "/bin/sleep", "30"); err == nil {
		t.Fatal("a command past its timeout succeeded")
	}
	if d := time.Since(begin); d > 10*time.Second {
		t.Fatalf("a 200ms timeout took %s", d)
	}
}

// TestErrorsAndTailPicksKlogErrors checks that a log's klog error and
// fatal lines come first, then its tail, long lines shortened.
func TestErrorsAndTailPicksKlogErrors(t *testing.T) {
	log := filepath.Join(t.TempDir(), "c.log")
	lines := []string{
		"I1129 info one", "E1129 first error", "W1129 warning", "Error without klog header",
		"F1129 fatal " + strings.Repeat("x", 500), "I1129 info two", "I1129 info three",
	}
	if err := os.WriteFile(log, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got := ErrorsAndTail(log, 1, 2)
	errs, tail, ok := strings.Cut(got, "\n  ...\n")
	if !ok {
		t.Fatalf("no separator in %q", got)
	}
	if !strings.HasPrefix(errs, "F1129 fatal x") || !strings.HasSuffix(errs, "...") || len(errs) != 403 {
		t.Errorf("errors = %q, want the last klog error line, shortened to 400 bytes", errs)
	}
	if tail != "I1129 info two\nI1129 info three" {
		t.Errorf("tail = %q", tail)
	}
	if got := ErrorsAndTail(filepath.Join(t.TempDir(), "none"), 1, 1); !strings.HasPrefix(got, "(no log: ") {
		t.Errorf("missing log: %q", got)
	}
}
