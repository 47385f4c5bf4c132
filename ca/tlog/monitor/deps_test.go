package monitor_test

import (
	"os/exec"
	"strings"
	"testing"
)

// The monitor reads the log's public data alone: it must not pull in the
// ledger's storage (bbolt, PostgreSQL), the CA's packages that hold it, or
// a Kubernetes client.
func TestMonitorImportsNoStorageOrKubernetes(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps",
		"github.com/castellan-dev/castellan/ca/tlog/monitor").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "github.com/castellan-dev/castellan/internal/witness\n") {
		t.Fatalf("go list -deps does not list internal/witness, which the monitor uses; the check below would prove nothing:\n%s", out)
	}
	forbidden := []string{"go.etcd.io/bbolt", "k8s.io/", "github.com/jackc/pgx",
		"github.com/castellan-dev/castellan/ca/ledger", "github.com/castellan-dev/castellan/ca/store"}
	for _, dep := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			if strings.HasPrefix(dep, f) {
				t.Errorf("ca/tlog/monitor depends on %s", dep)
			}
		}
	}
	if !strings.Contains(string(out), "github.com/castellan-dev/castellan/internal/witness\n") {
		t.Errorf("go list -deps does not list internal/witness; is the output what this test expects?\n%s", out)
	}
}
