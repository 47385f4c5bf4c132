package verifycmd_test

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestVerifyCommandLinksNoStorageNoKubernetes holds castellanctl's
// verification path (ledger verify, checkpoint, prove) to the promise of
// ca/verifier: it links no database driver, no Kubernetes client, no
// metrics library and none of the CA's storage. A stopped server's file is
// read through the FileVerifier package ledgercmd gives it.
func TestVerifyCommandLinksNoStorageNoKubernetes(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps",
		"github.com/castellan-dev/castellan/cmd/castellanctl/internal/verifycmd").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	for _, want := range []string{"github.com/castellan-dev/castellan/ca/verifier", "google.golang.org/grpc"} {
		if !slices.Contains(deps, want) {
			t.Fatalf("go list -deps does not list %s, which the command uses; the check below would prove nothing:\n%s", want, out)
		}
	}
	forbidden := []string{
		"go.etcd.io/bbolt", "k8s.io/client-go", "k8s.io/apimachinery", "github.com/jackc/pgx",
		"github.com/prometheus/client_golang",
		"github.com/castellan-dev/castellan/ca/store", "github.com/castellan-dev/castellan/ca/ledger",
		"github.com/castellan-dev/castellan/ca/authz",
	}
	for _, d := range deps {
		for _, f := range forbidden {
			if d == f || strings.HasPrefix(d, f+"/") {
				t.Errorf("verifycmd links %s (through %s); the verification path must not", f, d)
			}
		}
	}
}
