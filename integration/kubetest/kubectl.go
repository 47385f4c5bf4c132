package kubetest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// kubectlTimeout bounds one kubectl run.
const kubectlTimeout = 2 * time.Minute

// KubectlCommand returns a command that runs kubectl v1.34.4 (the
// "kubectl" subcommand of kube-testenv) with args against e, as the admin:
// KUBECONFIG is set to Kubeconfig(). The command is killed when ctx ends.
func (e *Env) KubectlCommand(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, e.shared.binary, append([]string{"kubectl"}, args...)...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+e.shared.kubeconfig)
	return cmd
}

// Kubectl runs kubectl with args against e (as the admin) and returns its
// standard output. It fails the test if kubectl fails or takes longer than
// two minutes; use KubectlCommand to handle failure yourself.
func (e *Env) Kubectl(args ...string) string {
	if e.t != nil {
		e.t.Helper()
	}
	return e.KubectlWithInput(nil, args...)
}

// KubectlWithInput is Kubectl with stdin as kubectl's standard input (e.g.
// for "apply -f -").
func (e *Env) KubectlWithInput(stdin io.Reader, args ...string) string {
	if e.t != nil {
		e.t.Helper()
	}
	ctx, cancel := context.WithTimeout(context.Background(), kubectlTimeout)
	defer cancel()
	out, err := runKubectl(e.KubectlCommand(ctx, args...), stdin)
	if err != nil {
		e.fatalf("%v", err)
	}
	return out
}

// Kustomize runs "kubectl kustomize dir" (no cluster needed) and returns
// the rendered manifests. Like Start, it skips t when the kube-testenv
// binary is missing, unless CASTELLAN_REQUIRE_KUBE=1.
func Kustomize(t testing.TB, dir string) string {
	t.Helper()
	bin := requireBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), kubectlTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "kubectl", "kustomize", dir)
	// No cluster is contacted; keep a developer's kubeconfig out of it.
	cmd.Env = append(os.Environ(), "KUBECONFIG="+os.DevNull)
	out, err := runKubectl(cmd, nil)
	if err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	return out
}

func runKubectl(cmd *exec.Cmd, stdin io.Reader) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %v\nstderr: %s\nstdout: %s",
			strings.Join(cmd.Args[2:], " "), err, stderr.String(), stdout.String())
	}
	return stdout.String(), nil
}
