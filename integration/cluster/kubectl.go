package cluster

import (
	"time"

	"github.com/castellan-dev/castellan/integration/cluster/proc"
)

// Kubectl runs kubectl v1.34.4 (the one in kube-testenv) with the admin
// kubeconfig and returns its combined output; it fails the test on error.
// A relative path in args (e.g. -k deploy/base/ca) is relative to the
// test's working directory.
func (c *Cluster) Kubectl(args ...string) string {
	c.t.Helper()
	out, err := proc.Run(5*time.Minute, c.bins.Testenv, append([]string{"kubectl", "--kubeconfig", c.Kubeconfig()}, args...)...)
	if err != nil {
		c.t.Fatalf("cluster: %v", err)
	}
	return out
}
