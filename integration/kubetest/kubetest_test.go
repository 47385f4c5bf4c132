package kubetest_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/castellan-dev/castellan/integration/kubetest"
)

const (
	extraNodeName = "authentication.kubernetes.io/node-name"
	extraNodeUID  = "authentication.kubernetes.io/node-uid"
	extraPodName  = "authentication.kubernetes.io/pod-name"
	extraPodUID   = "authentication.kubernetes.io/pod-uid"
)

// TestPodBoundTokenReview checks what Castellan's CA relies on: a token
// bound to a pod on a node, requested for audience castellan-ca, passes a
// TokenReview for that audience with the pod's and node's identity in the
// extras, and fails a review for another audience.
func TestPodBoundTokenReview(t *testing.T) {
	env := kubetest.Start(t)
	const ns, sa, podName, nodeName = "workloads", "frontend", "frontend-0", "node-a"

	env.CreateNamespace(ns)
	env.CreateServiceAccount(ns, sa)
	node := env.CreateNode(nodeName)
	pod := env.CreatePod(ns, podName, sa, nodeName)
	if pod.UID == "" || pod.Status.Phase != "Running" || pod.Spec.NodeName != nodeName {
		t.Fatalf("pod: uid=%q phase=%q node=%q", pod.UID, pod.Status.Phase, pod.Spec.NodeName)
	}
	if cid := pod.Status.ContainerStatuses[0].ContainerID; !strings.HasPrefix(cid, "containerd://") || len(cid) != len("containerd://")+64 {
		t.Fatalf("container ID = %q", cid)
	}
	// The ServiceAccount admission plugin is on: the pod got the projected
	// service-account token volume.
	var projected bool
	for _, v := range pod.Spec.Volumes {
		projected = projected || (strings.HasPrefix(v.Name, "kube-api-access-") && v.Projected != nil)
	}
	if !projected {
		t.Errorf("pod has no kube-api-access projected volume: %+v", pod.Spec.Volumes)
	}

	token := env.PodToken(ns, sa, podName, kubetest.AudienceCastellan, time.Hour)

	st := env.TokenReview(token, kubetest.AudienceCastellan)
	if !st.Authenticated {
		t.Fatalf("token review for %s: not authenticated: %q", kubetest.AudienceCastellan, st.Error)
	}
	if want := "system:serviceaccount:" + ns + ":" + sa; st.User.Username != want {
		t.Errorf("username = %q, want %q", st.User.Username, want)
	}
	if len(st.Audiences) != 1 || st.Audiences[0] != kubetest.AudienceCastellan {
		t.Errorf("audiences = %v, want [%s]", st.Audiences, kubetest.AudienceCastellan)
	}
	wantExtra := map[string]string{
		extraNodeName: nodeName,
		extraNodeUID:  string(node.UID),
		extraPodName:  podName,
		extraPodUID:   string(pod.UID),
	}
	for k, want := range wantExtra {
		if got := st.User.Extra[k]; len(got) != 1 || got[0] != want {
			t.Errorf("extra %s = %v, want [%s]", k, got, want)
		}
	}
	t.Logf("user: %s groups=%v extra=%v", st.User.Username, st.User.Groups, st.User.Extra)

	// The same token must not pass for another audience.
	if st := env.TokenReview(token, kubetest.AudienceIstio); st.Authenticated {
		t.Errorf("token for %s authenticated for %s: %+v", kubetest.AudienceCastellan, kubetest.AudienceIstio, st.User)
	}
	// Nor must a token for another audience pass for castellan-ca.
	other := env.PodToken(ns, sa, podName, "some-other-audience", 10*time.Minute)
	if st := env.TokenReview(other, kubetest.AudienceCastellan); st.Authenticated {
		t.Errorf("token for some-other-audience authenticated for %s: %+v", kubetest.AudienceCastellan, st.User)
	}

	// Deleting the pod invalidates its bound token.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	zero := int64(0)
	if err := env.Client().CoreV1().Pods(ns).Delete(ctx, podName, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Client().CoreV1().Pods(ns).Get(ctx, podName, metav1.GetOptions{}); err == nil {
		t.Fatalf("pod %s still exists after delete with grace period 0", podName)
	}
	// kube-apiserver caches successful token authentications for 10s, so
	// a deleted pod's token keeps passing TokenReview for up to that long.
	deleted := time.Now()
	deadline := deleted.Add(20 * time.Second)
	for env.TokenReview(token, kubetest.AudienceCastellan).Authenticated {
		if time.Now().After(deadline) {
			t.Fatalf("token of a deleted pod still authenticates after 20s")
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("deleted pod's token rejected after %s", time.Since(deleted).Round(100*time.Millisecond))
}

// TestTokenAuthenticatesToAPIServer checks that a castellan-ca token is
// also an API credential (castellan-ca is one of --api-audiences), and that
// RBAC applies to it.
func TestTokenAuthenticatesToAPIServer(t *testing.T) {
	env := kubetest.Start(t)
	env.CreateNamespace("team")
	env.CreateNode("node-b")
	pod := env.CreatePod("team", "app-0", "default", "node-b")
	token := env.PodToken("team", "default", pod.Name, kubetest.AudienceCastellan, 10*time.Minute)

	cfg := env.RESTConfigWithToken(token)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs := mustClientset(t, cfg)
	ssr, err := cs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("self subject review with pod token: %v", err)
	}
	if got, want := ssr.Status.UserInfo.Username, "system:serviceaccount:team:default"; got != want {
		t.Errorf("username = %q, want %q", got, want)
	}
	if _, err := cs.CoreV1().Secrets("team").List(ctx, metav1.ListOptions{}); err == nil {
		t.Errorf("service account listed secrets without any RBAC grant")
	}
}

// TestKubectl checks the embedded kubectl: server-side dry-run apply and
// kustomize.
func TestKubectl(t *testing.T) {
	env := kubetest.Start(t)
	env.CreateNamespace("castellan-system")

	dir := t.TempDir()
	manifest := `apiVersion: v1
kind: ServiceAccount
metadata:
  name: castellan-agent
  namespace: castellan-system
---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: castellan-agent
  namespace: castellan-system
spec:
  selector:
    matchLabels: {app: castellan-agent}
  template:
    metadata:
      labels: {app: castellan-agent}
    spec:
      serviceAccountName: castellan-agent
      containers:
      - name: agent
        image: example.invalid/castellan-agent:dev
`
	if err := os.WriteFile(filepath.Join(dir, "agent.yaml"), []byte(manifest), 0o600); err != nil {
		t.Fatal(err)
	}
	out := env.Kubectl("apply", "--dry-run=server", "-f", filepath.Join(dir, "agent.yaml"))
	if !strings.Contains(out, "daemonset.apps/castellan-agent created (server dry run)") {
		t.Errorf("kubectl apply --dry-run=server output:\n%s", out)
	}
	// A server-side dry run persists nothing.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := env.Client().AppsV1().DaemonSets("castellan-system").Get(ctx, "castellan-agent", metav1.GetOptions{}); err == nil {
		t.Errorf("dry-run created the DaemonSet")
	}

	// The apiserver validates: an invalid object fails the dry run.
	bad := strings.Replace(manifest, "name: agent", "name: Agent_Invalid", 1)
	cmd := env.KubectlCommand(ctx, "apply", "--dry-run=server", "-f", "-")
	cmd.Stdin = strings.NewReader(bad)
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Errorf("invalid container name passed a server dry run:\n%s", out)
	}

	// kubectl kustomize, which needs no cluster.
	kust := "resources:\n- agent.yaml\nnamePrefix: test-\n"
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(kust), 0o600); err != nil {
		t.Fatal(err)
	}
	rendered := kubetest.Kustomize(t, dir)
	if !strings.Contains(rendered, "name: test-castellan-agent") {
		t.Errorf("kustomize output:\n%s", rendered)
	}
	out = env.KubectlWithInput(strings.NewReader(rendered), "apply", "--dry-run=server", "-f", "-")
	if !strings.Contains(out, "test-castellan-agent created (server dry run)") {
		t.Errorf("apply of kustomized output:\n%s", out)
	}
}

// TestLaunchShared checks the TestMain-style API: Launch, For and Stop.
func TestLaunchShared(t *testing.T) {
	if _, err := kubetest.Binary(); err != nil {
		kubetest.Start(t) // skips or fails with the standard message
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	shared, err := kubetest.Launch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(filepath.Dir(shared.Kubeconfig()))
	env := shared.For(t)
	env.CreateNamespace("shared")
	if out := env.Kubectl("get", "serviceaccount", "default", "-n", "shared", "-o", "name"); strings.TrimSpace(out) != "serviceaccount/default" {
		t.Errorf("kubectl get sa: %q", out)
	}
	if err := shared.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := shared.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("Stop left %s behind (stat: %v)", dir, err)
	}
	hc := mustClientset(t, shared.RESTConfig())
	ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	if _, err := hc.CoreV1().Namespaces().List(ctx2, metav1.ListOptions{}); err == nil {
		t.Errorf("apiserver still answers after Stop")
	}
}

func mustClientset(t *testing.T, cfg *rest.Config) kubernetes.Interface {
	t.Helper()
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}
