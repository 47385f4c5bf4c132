package integration_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/castellan-dev/castellan/integration/cluster"
	"github.com/castellan-dev/castellan/integration/testbin"
)

// clusterTTL is the workload SVID lifetime of the Bookinfo cluster test's
// CA (an overlay of deploy/base/ca): the agent renews at about half of it.
const clusterTTL = 30 * time.Second

// TestClusterBookinfoOverMTLS installs Castellan (with a short SVID
// lifetime, set by a kustomize overlay as a user would) and Bookinfo's Go
// services in pods of namespace bookinfo, each taking its identity from the
// agent's socket. GET /productpage through the productpage Service must
// come back whole — details, reviews and ratings, every hop over mTLS with
// spiffe://cluster.local/ns/bookinfo/sa/bookinfo-<service> on both ends —
// while every certificate rotates, and while the CA's pod is deleted and
// replaced; after the replacement the certificates keep rotating.
func TestClusterBookinfoOverMTLS(t *testing.T) {
	c := cluster.Start(t)
	names := []string{"castellan-server", "castellan-agent"}
	for _, svc := range []string{"productpage", "details", "reviews", "ratings"} {
		names = append(names, "castellan-bookinfo-"+svc)
	}
	images := castellanImages(t, names...)
	for _, n := range names[2:] {
		c.ImportLayout(filepath.Join(images, n), "ghcr.io/castellan-dev/"+n+":latest")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	installCastellan(ctx, t, c, images, castellanTTLOverlay(t, clusterTTL))
	client := c.Client()
	c.Kubectl("apply", "-f", filepath.Join(testbin.RepoRoot(), "integration", "cluster", "manifests", "bookinfo.yaml"))
	for _, d := range []string{"details-v1", "ratings-v1", "reviews-v3", "productpage-v1"} {
		waitDeploymentAvailable(ctx, t, client, "bookinfo", d)
	}
	svc, err := client.CoreV1().Services("bookinfo").Get(ctx, "productpage", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + net.JoinHostPort(svc.Spec.ClusterIP, "9080") + "/productpage?refresh=0"
	hc := &http.Client{Timeout: 10 * time.Second}
	waitProductPage(ctx, t, hc, url)

	seen := hammerProductPage(ctx, t, hc, url, 4*clusterTTL, nil)
	t.Logf("serials per hop side before the CA pod's deletion: %v", seen)

	// Delete the CA's pod; the Deployment (Recreate) replaces it. Pages stay
	// whole meanwhile (the agent serves the SVIDs it holds), and once the
	// new pod serves, every certificate rotates again.
	pods, err := client.CoreV1().Pods("castellan-system").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=castellan-ca"})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("the CA pod: %v (%d pods)", err, len(pods.Items))
	}
	deleted := pods.Items[0].UID
	zero := int64(0)
	if err := client.CoreV1().Pods("castellan-system").Delete(ctx, pods.Items[0].Name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	after := hammerProductPage(ctx, t, hc, url, 6*clusterTTL, seen)
	t.Logf("serials per hop side after the CA pod's replacement: %v", after)
	waitDeploymentAvailable(ctx, t, client, "castellan-system", "castellan-ca")
	pods, err = client.CoreV1().Pods("castellan-system").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=castellan-ca"})
	if err != nil || len(pods.Items) != 1 || pods.Items[0].UID == deleted {
		t.Fatalf("want one new CA pod after deleting %s: %v %+v", deleted, err, pods)
	}
}

// castellanTTLOverlay writes a kustomize overlay of deploy/base/ca that
// sets the CA's --default-ttl, and returns its directory.
func castellanTTLOverlay(t *testing.T, ttl time.Duration) string {
	t.Helper()
	dir := t.TempDir()
	base, err := filepath.Rel(dir, filepath.Join(testbin.RepoRoot(), "deploy", "base", "ca"))
	if err != nil {
		t.Fatal(err)
	}
	k := fmt.Sprintf(`apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - %s
patches:
  - target:
      kind: Deployment
      name: castellan-ca
    patch: |-
      - op: add
        path: /spec/template/spec/containers/0/args/-
        value: --default-ttl=%s
`, base, ttl)
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// hammerProductPage requests the page every 100 ms, each response whole and
// every hop mutually authenticated with the Bookinfo identities of
// namespace bookinfo, until every hop side has shown a serial not in
// before and then another one (a rotation seen from start to end), or
// fails after limit. A request that fails outright is retried once (a
// caller's retry); a page that is not whole fails the test. It returns
// the serials seen per side.
func hammerProductPage(ctx context.Context, t *testing.T, hc *http.Client, url string, limit time.Duration, before map[string][]string) map[string][]string {
	t.Helper()
	seen := map[string][]string{}
	deadline := time.Now().Add(limit)
	requests, retries := 0, 0
	for time.Now().Before(deadline) && ctx.Err() == nil {
		body, err := getProductPage(hc, url)
		if err != nil {
			retries++
			if body, err = getProductPage(hc, url); err != nil {
				t.Fatalf("request %d: %v (and its retry)", requests, err)
			}
		}
		requests++
		for side, serial := range bookinfoSerials(t, body) {
			if s := seen[side]; len(s) == 0 || s[len(s)-1] != serial {
				seen[side] = append(s, serial)
			}
		}
		if t.Failed() {
			t.FailNow()
		}
		if rotatedSince(seen, before) {
			t.Logf("%d requests (%d retried), all whole", requests, retries)
			return seen
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("within %s not every certificate rotated: %v (before: %v)", limit, seen, before)
	return nil
}

// waitProductPage waits (bounded by ctx) for the first whole page: the
// Service's endpoints and kube-proxy's rules follow the pods' readiness.
func waitProductPage(ctx context.Context, t *testing.T, hc *http.Client, url string) {
	t.Helper()
	var last error
	for {
		if _, last = getProductPage(hc, url); last == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no whole product page: %v", last)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// getProductPage GETs the page and checks it is whole: 200, the book's
// details, both reviews with stars from ratings, no error shown.
func getProductPage(hc *http.Client, url string) (string, error) {
	resp, err := hc.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", err
	}
	body := string(b)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s = %s", url, resp.Status)
	}
	for _, want := range []string{"ISBN-13", "123-1234567890", "Reviewer1", "Reviewer2", `data-stars="5"`, `data-stars="4"`} {
		if !strings.Contains(body, want) {
			return "", fmt.Errorf("product page lacks %q:\n%s", want, body)
		}
	}
	if strings.Contains(body, `class="error"`) {
		return "", fmt.Errorf("product page shows an error:\n%s", body)
	}
	return body, nil
}

// bookinfoSerials returns the serial of each side of each hop on a page and
// checks each side's identity: spiffe://cluster.local/ns/bookinfo/sa/bookinfo-<service>.
func bookinfoSerials(t *testing.T, body string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, m := range demoHopRow.FindAllStringSubmatch(body, -1) {
		hop := m[1] + "->" + m[2]
		if m[7] != "" {
			t.Errorf("hop %s failed: %s", hop, m[7])
		}
		if want := "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-" + m[2]; m[3] != want {
			t.Errorf("hop %s: server identity %q, want %q", hop, m[3], want)
		}
		if want := "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-" + m[1]; m[5] != want {
			t.Errorf("hop %s: client identity %q, want %q", hop, m[5], want)
		}
		out[hop+" server"], out[hop+" client"] = m[4], m[6]
	}
	if len(out) != len(demoSides) {
		t.Errorf("product page shows %d hop sides, want %d: %v", len(out), len(demoSides), out)
	}
	return out
}

// rotatedSince reports whether every hop side has shown at least two
// serials that are not in before: one issued after before was taken and
// its successor.
func rotatedSince(seen, before map[string][]string) bool {
	for _, side := range demoSides {
		fresh := 0
		for _, s := range seen[side] {
			if !slices.Contains(before[side], s) {
				fresh++
			}
		}
		if fresh < 2 {
			return false
		}
	}
	return true
}
