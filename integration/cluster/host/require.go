package host

import (
	"os"
	"testing"

	"github.com/castellan-dev/castellan/internal/testroot"
)

// EnvEnable names the environment variable that must be 1 for a test to
// change the host (run a cluster).
const EnvEnable = "CASTELLAN_CLUSTER"

// Require lets a developer's plain `go test` skip the tests that change
// the host (the cluster tests); under `make test` (CASTELLAN_REQUIRE_ROOT
// set, as it sets EnvEnable) a disabled cluster or a missing root fails.
func Require(t testing.TB) {
	t.Helper()
	if os.Getenv(EnvEnable) != "1" {
		if os.Getenv(testroot.EnvRequire) != "" {
			t.Fatalf("cluster: %s is set but %s is not: the real-cluster tests would not run", testroot.EnvRequire, EnvEnable)
		}
		t.Skipf("cluster: set %s=1 (as root) to run a real single-node Kubernetes cluster", EnvEnable)
	}
	testroot.Require(t, "run a real kubelet, containerd and iptables")
}
