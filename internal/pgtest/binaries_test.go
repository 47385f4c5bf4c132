package pgtest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func fakeTools(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tool := range []string{"initdb", "postgres"} {
		if err := os.WriteFile(filepath.Join(dir, tool), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// Missing binaries: a non-root run fails saying what to install (never a
// skip); a root run installs, then uses the newest major version.
func TestBinariesMissing(t *testing.T) {
	root := t.TempDir()
	glob := filepath.Join(root, "*", "bin")
	installed := 0
	install := func() error {
		installed++
		fakeTools(t, filepath.Join(root, "9", "bin"))
		fakeTools(t, filepath.Join(root, "15", "bin"))
		return nil
	}
	_, err := binaries(glob, 1000, install)
	if err == nil || !strings.Contains(err.Error(), "apt-get install postgresql") || installed != 0 {
		t.Fatalf("non-root without PostgreSQL: %v (installed %d times)", err, installed)
	}
	dir, err := binaries(glob, 0, install)
	if err != nil || dir != filepath.Join(root, "15", "bin") || installed != 1 {
		t.Fatalf("root: %q, %v (installed %d times), want the newest version", dir, err, installed)
	}
	if _, err := binaries(filepath.Join(t.TempDir(), "*", "bin"), 0, func() error { return errors.New("no network") }); err == nil || !strings.Contains(err.Error(), "no network") {
		t.Fatalf("failed install: %v", err)
	}
}

// The install lock is exclusive across open files (processes) and its
// wait is bounded.
func TestInstallLockExcludes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	unlock, err := lockFile(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := lockFile(ctx, path); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second lock while held: %v", err)
	}
	unlock()
	unlock2, err := lockFile(context.Background(), path)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	unlock2()
}
