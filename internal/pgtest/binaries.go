package pgtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// binGlob is where Debian's postgresql-NN packages put the server's tools.
const binGlob = "/usr/lib/postgresql/*/bin"

// Binaries returns the directory holding initdb and postgres (the newest
// major version installed). When there is none it installs Debian's
// postgresql package if it runs as root, and otherwise fails, saying how
// to install it: a test needing PostgreSQL never passes without one.
func Binaries() (string, error) {
	if dir := findBinaries(); dir != "" {
		return dir, nil
	}
	if os.Geteuid() != 0 {
		return "", fmt.Errorf("no PostgreSQL server binaries (initdb, postgres) in %s: install Debian's postgresql package (apt-get install postgresql), or run the tests as root, which installs it", binGlob)
	}
	if err := install(); err != nil {
		return "", err
	}
	if dir := findBinaries(); dir != "" {
		return dir, nil
	}
	return "", fmt.Errorf("apt-get installed postgresql but %s holds no initdb and postgres", binGlob)
}

func findBinaries() string {
	dirs, _ := filepath.Glob(binGlob)
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

// install runs apt-get install postgresql, updating the package lists
// first if the install fails. Concurrent test binaries queue on dpkg's
// lock.
func install() error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
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
