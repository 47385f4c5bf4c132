// Package testroot lets tests that need root (another uid, chown, cgroups,
// chroot) skip on a developer's unprivileged run but fail under `make test`,
// which sets CASTELLAN_REQUIRE_ROOT=1: there a missing privilege is a
// failure, not a pass.
package testroot

import (
	"os"
	"testing"
)

// EnvRequire names the variable that turns a missing root into a failure.
const EnvRequire = "CASTELLAN_REQUIRE_ROOT"

// Require skips t, or fails it when EnvRequire is set, unless the test runs
// as root. why says what the test needs root for.
func Require(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv(EnvRequire) != "" {
		t.Fatalf("needs root to %s, and %s is set", why, EnvRequire)
	}
	t.Skipf("needs root to %s (set %s=1 to fail instead)", why, EnvRequire)
}
