package monitor_test

import (
	"os/exec"
	"strings"
	"testing"
)

// The monitor reads the log's public data alone: neither it nor the
// packages it was split into (the entry format, the state file) may pull
// in the ledger's storage (bbolt, PostgreSQL), the CA's packages that hold
// it, or a Kubernetes client.
func TestMonitorImportsNoStorageOrKubernetes(t *testing.T) {
	for pkg, sentinel := range map[string]string{
		// Each package's go list output must name a dependency it really
		// has, or the check below would prove nothing.
		"github.com/castellan-dev/castellan/ca/tlog/monitor":       "github.com/castellan-dev/castellan/internal/witness",
		"github.com/castellan-dev/castellan/ca/tlog/monitor/state": "golang.org/x/mod/sumdb/note",
		"github.com/castellan-dev/castellan/ca/tlog/logentry":      "crypto/x509",
	} {
		out, err := exec.Command("go", "list", "-deps", pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
		}
		if !strings.Contains(string(out), sentinel+"\n") {
			t.Fatalf("go list -deps %s does not list %s, which it uses; the check below would prove nothing:\n%s", pkg, sentinel, out)
		}
		forbidden := []string{"go.etcd.io/bbolt", "k8s.io/", "github.com/jackc/pgx",
			"github.com/castellan-dev/castellan/ca/ledger", "github.com/castellan-dev/castellan/ca/store"}
		for _, dep := range strings.Fields(string(out)) {
			for _, f := range forbidden {
				if strings.HasPrefix(dep, f) {
					t.Errorf("%s depends on %s", pkg, dep)
				}
			}
		}
	}
}
