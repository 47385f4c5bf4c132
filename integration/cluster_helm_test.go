package integration_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/castellan-dev/castellan/integration/cluster"
)

// TestClusterHelmInstall installs Castellan from the Helm chart as
// deploy/README.md tells users to — the namespace labelled privileged, the
// plug-in CA Secret, then the chart (helm template, applied with kubectl;
// images tagged as --set image.tag says) — and checks that a Bookinfo pod
// gets spiffe://cluster.local/ns/bookinfo/sa/bookinfo-details from the
// chart's agent DaemonSet, chained to the plug-in root.
func TestClusterHelmInstall(t *testing.T) {
	helm := helmTool.path(t)
	c := cluster.Start(t)
	c.RemoveAtStop("/run/castellan")
	c.RemoveAtStop("/var/lib/castellan")
	images := castellanImages(t, "castellan-server", "castellan-agent", "castellan-bookinfo-details")
	const tag = "cluster-test"
	c.ImportLayout(filepath.Join(images, "castellan-server"), "ghcr.io/castellan-dev/castellan-server:"+tag)
	c.ImportLayout(filepath.Join(images, "castellan-agent"), "ghcr.io/castellan-dev/castellan-agent:"+tag)
	c.ImportLayout(filepath.Join(images, "castellan-bookinfo-details"), detailsImageRef)
	client := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "castellan-system",
		Labels: map[string]string{"pod-security.kubernetes.io/enforce": "privileged"}}}
	if _, err := client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rootPEM := createPluginCA(ctx, t, client, "castellan-system")
	createLocalVolume(ctx, t, c, "castellan-ca-data", "1Gi", 65532)
	r := helmTemplate(t, helm, "--set", "image.tag="+tag)
	if r.err != nil {
		t.Fatalf("helm template: %v\n%s", r.err, r.stderr)
	}
	rendered := filepath.Join(t.TempDir(), "castellan.yaml")
	if err := os.WriteFile(rendered, []byte(r.stdout), 0o600); err != nil {
		t.Fatal(err)
	}
	c.Kubectl("apply", "-f", rendered)
	waitDeploymentAvailable(ctx, t, client, "castellan-system", "castellan-ca")
	waitDaemonSetReady(ctx, t, client, "castellan-system", "castellan-agent")

	pod := runBookinfoDetails(ctx, t, client)
	checkServedSVID(ctx, t, pod, "9081", detailsID, rootPEM)
}
