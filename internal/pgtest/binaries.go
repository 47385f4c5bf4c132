package pgtest

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// binGlob is where Debian's postgresql-NN packages put the server's tools.
const binGlob = "/usr/lib/postgresql/*/bin"

// Binaries returns the directory holding initdb and postgres (the newest
// major version installed). When there is none it installs Debian's
// postgresql package if it runs as root, and otherwise fails, saying how
// to install it: a test needing PostgreSQL never passes without one.
func Binaries() (string, error) { return binaries(binGlob, os.Geteuid(), install) }

// binaries is Binaries with its environment as parameters.
func binaries(glob string, euid int, install func() error) (string, error) {
	if dir := findBinaries(glob); dir != "" {
		return dir, nil
	}
	if euid != 0 {
		return "", fmt.Errorf("no PostgreSQL server binaries (initdb, postgres) in %s: install Debian's postgresql package (apt-get install postgresql), or run the tests as root, which installs it", glob)
	}
	if err := install(); err != nil {
		return "", err
	}
	if dir := findBinaries(glob); dir != "" {
		return dir, nil
	}
	return "", fmt.Errorf("apt-get installed postgresql but %s holds no initdb and postgres", glob)
}

func findBinaries(glob string) string {
	dirs, _ := filepath.Glob(glob)
	best, bestMajor := "", -1
	for _, d := range dirs {
		major, err := strconv.Atoi(filepath.Base(filepath.Dir(d)))
		if err != nil || major <= bestMajor {
			continue
		}
		if isExec(filepath.Join(d, "initdb")) && isExec(filepath.Join(d, "postgres")) {
			best, bestMajor = d, major
		}
	}
	return best
}

func isExec(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// installLock serializes installs across test binaries run in parallel
// (go test runs packages concurrently); policyRC keeps the package's
// service from starting a cluster of its own while it installs.
const (
	installLock = "/var/lock/castellan-pgtest-install.lock"
	policyRC    = "/usr/sbin/policy-rc.d"
)

// install runs apt-get install postgresql (updating the package lists
// first if that fails), holding installLock. No server is left running:
// the tests start their own.
func install() error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	unlock, err := lockFile(ctx, installLock)
	if err != nil {
		return fmt.Errorf("wait to install postgresql: %w", err)
	}
	defer unlock()
	if findBinaries(binGlob) != "" {
		return nil // another test binary installed it meanwhile
	}
	if _, err := os.Lstat(policyRC); errors.Is(err, fs.ErrNotExist) {
		if err := os.WriteFile(policyRC, []byte("#!/bin/sh\n# castellan pgtest: no service starts during its install\nexit 101\n"), 0o755); err == nil {
			defer os.Remove(policyRC)
		}
	}
	apt := func(args ...string) ([]byte, error) {
		cmd := exec.CommandContext(ctx, "apt-get", append([]string{"-o", "DPkg::Lock::Timeout=600"}, args...)...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		return cmd.CombinedOutput()
	}
	installArgs := []string{"install", "-y", "-qq", "--no-install-recommends", "postgresql"}
	if _, err := apt(installArgs...); err == nil {
		return nil
	}
	if out, err := apt("update", "-qq"); err != nil {
		return fmt.Errorf("apt-get update (to install postgresql): %w\n%s", err, out)
	}
	if out, err := apt(installArgs...); err != nil {
		return fmt.Errorf("apt-get install postgresql: %w\n%s", err, out)
	}
	return nil
}

// lockFile takes an exclusive flock on path, polling until ctx is done.
func lockFile(ctx context.Context, path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, err
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
