package verifier_test

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestVerifierLinksNoStoreNoKubernetes holds the package to its promise:
// an auditor who links it links no database driver, no Kubernetes client,
// no metrics library and none of the CA's own storage.
func TestVerifierLinksNoStoreNoKubernetes(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/castellan-dev/castellan/ca/verifier").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if !slices.Contains(deps, "github.com/transparency-dev/merkle/compact") {
		t.Fatalf("go list -deps does not list the Merkle library the verifier uses; the check below would prove nothing:\n%s", out)
	}
	forbidden := []string{
		"go.etcd.io/bbolt", "k8s.io/client-go", "k8s.io/apimachinery", "github.com/jackc/pgx",
		"github.com/prometheus/client_golang", "google.golang.org/grpc",
		"github.com/castellan-dev/castellan/ca/store", "github.com/castellan-dev/castellan/ca/ledger",
	}
	for _, d := range deps {
		for _, f := range forbidden {
			if d == f || strings.HasPrefix(d, f+"/") {
				t.Errorf("ca/verifier links %s (through %s); an offline verifier must not", f, d)
			}
		}
	}
}
