package integration_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/castellan-dev/castellan/integration/cluster"
)

const podcheckImage = "castellan.test/podcheck:v1"

// TestClusterRunsPodsAndLeavesNothing runs a real single-node cluster
// (kubelet, containerd, runc, CNI, scheduler, controller-manager,
// kube-proxy), schedules a pod with a locally built image through the API
// and checks what the kubelet gave it: a kubepods cgroup named by its UID,
// a projected token for the castellan-ca audience, readable logs, and the
// apiserver reachable as https://kubernetes.default.svc (cluster DNS,
// kube-proxy, the default token). A pod
// whose image was never imported must not start (nothing is pulled). Then
// it stops the cluster and checks that nothing is left on the host.
func TestClusterRunsPodsAndLeavesNothing(t *testing.T) {
	c := cluster.Start(t)
	c.ImportGoBinary("./integration/cluster/podcheck", podcheckImage)
	client := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	pod := createPodcheck(ctx, t, client, "default", "podcheck", "default")
	pod = waitPodRunning(ctx, t, client, pod.Namespace, pod.Name)
	logs := waitPodLog(ctx, t, client, pod.Namespace, pod.Name, "podcheck: token-aud=")
	t.Logf("pod %s/%s (uid %s) log:\n%s", pod.Namespace, pod.Name, pod.UID, logs)
	uid := string(pod.UID)
	wantCgroup := "podcheck: cgroup=/kubepods/besteffort/pod" + uid + "/"
	if !strings.Contains(logs, wantCgroup) {
		t.Errorf("pod log lacks %q (the kubelet's cgroup for the pod):\n%s", wantCgroup, logs)
	}
	if !strings.Contains(logs, "podcheck: token-sub=system:serviceaccount:default:default\n") ||
		!strings.Contains(logs, "podcheck: token-aud="+cluster.AudienceCastellan+"\n") {
		t.Errorf("pod log lacks the projected token's subject and audience:\n%s", logs)
	}

	// Cluster DNS, kube-proxy and the default token: the pod reached the
	// apiserver as https://kubernetes.default.svc.
	if !strings.Contains(logs, "podcheck: api-version=v1.34.4\n") {
		t.Errorf("the pod did not read the apiserver's version through the kubernetes Service by name:\n%s", logs)
	}

	// A pod whose image is not in containerd stays unstarted: the cluster
	// pulls nothing.
	missing := podcheckSpec("missing-image", "default", "castellan.test/never-imported:v1")
	if _, err := client.CoreV1().Pods("default").Create(ctx, missing, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitContainerWaiting(ctx, t, client, "default", "missing-image", "ErrImageNeverPull")

	if err := c.Stop(); err != nil {
		t.Fatalf("teardown: %v", err)
	}
	if left := c.Leftovers(); len(left) > 0 {
		t.Fatalf("left behind after Stop:\n%s", strings.Join(left, "\n"))
	}
	if _, err := os.Stat(filepath.Join("/sys/fs/cgroup/memory/kubepods/besteffort", "pod"+uid)); !os.IsNotExist(err) {
		t.Errorf("the pod's cgroup survives Stop (stat: %v)", err)
	}
}

// podcheckSpec is a pod running image (podcheck) as service account sa,
// with a projected token for the castellan-ca audience.
func podcheckSpec(name, sa, image string) *corev1.Pod {
	expiry := int64(3600)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			ServiceAccountName:            sa,
			TerminationGracePeriodSeconds: new(int64),
			Containers: []corev1.Container{{
				Name:            "podcheck",
				Image:           image,
				ImagePullPolicy: corev1.PullNever,
				Args:            []string{"--api", "/var/run/secrets/castellan/token"},
				VolumeMounts:    []corev1.VolumeMount{{Name: "castellan-token", MountPath: "/var/run/secrets/castellan", ReadOnly: true}},
			}},
			Volumes: []corev1.Volume{{
				Name: "castellan-token",
				VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
					Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
						Audience: cluster.AudienceCastellan, ExpirationSeconds: &expiry, Path: "token",
					}}},
				}},
			}},
		},
	}
}

func createPodcheck(ctx context.Context, t *testing.T, client kubernetes.Interface, ns, name, sa string) *corev1.Pod {
	t.Helper()
	pod, err := client.CoreV1().Pods(ns).Create(ctx, podcheckSpec(name, sa, podcheckImage), metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating pod %s/%s: %v", ns, name, err)
	}
	return pod
}

// waitPodRunning waits (bounded by ctx) for the pod to be Running with
// every container ready.
func waitPodRunning(ctx context.Context, t *testing.T, client kubernetes.Interface, ns, name string) *corev1.Pod {
	t.Helper()
	var last *corev1.Pod
	for {
		pod, err := client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			last = pod
			if pod.Status.Phase == corev1.PodRunning && podReady(pod) {
				return pod
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("pod %s/%s not Running and ready: %s", ns, name, describePod(last))
		case <-time.After(300 * time.Millisecond):
		}
	}
}

func podReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// describePod summarises a pod's status for a failure message.
func describePod(pod *corev1.Pod) string {
	if pod == nil {
		return "(never read)"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "phase %s node %q", pod.Status.Phase, pod.Spec.NodeName)
	for _, c := range pod.Status.Conditions {
		fmt.Fprintf(&b, "; %s=%s %s", c.Type, c.Status, c.Message)
	}
	for _, cs := range pod.Status.ContainerStatuses {
		switch {
		case cs.State.Waiting != nil:
			fmt.Fprintf(&b, "; %s waiting %s: %s", cs.Name, cs.State.Waiting.Reason, cs.State.Waiting.Message)
		case cs.State.Terminated != nil:
			fmt.Fprintf(&b, "; %s terminated %s (exit %d): %s", cs.Name, cs.State.Terminated.Reason, cs.State.Terminated.ExitCode, cs.State.Terminated.Message)
		}
	}
	return b.String()
}

// waitPodLog waits until the pod's log contains want and returns the log.
func waitPodLog(ctx context.Context, t *testing.T, client kubernetes.Interface, ns, name, want string) string {
	t.Helper()
	var last string
	for {
		if rc, err := client.CoreV1().Pods(ns).GetLogs(name, &corev1.PodLogOptions{}).Stream(ctx); err == nil {
			b, _ := io.ReadAll(io.LimitReader(rc, 1<<20))
			rc.Close()
			last = string(b)
			if strings.Contains(last, want) {
				return last
			}
		} else {
			last = "error: " + err.Error()
		}
		select {
		case <-ctx.Done():
			t.Fatalf("log of pod %s/%s never contained %q; last: %s", ns, name, want, last)
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// waitContainerWaiting waits until the pod's container waits for reason.
func waitContainerWaiting(ctx context.Context, t *testing.T, client kubernetes.Interface, ns, name, reason string) {
	t.Helper()
	var last *corev1.Pod
	for {
		pod, err := client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			last = pod
			for _, cs := range pod.Status.ContainerStatuses {
				if cs.State.Waiting != nil && cs.State.Waiting.Reason == reason {
					return
				}
				if cs.State.Running != nil {
					t.Fatalf("pod %s/%s runs, want it waiting with %s", ns, name, reason)
				}
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("pod %s/%s never waited with %s: %s", ns, name, reason, describePod(last))
		case <-time.After(300 * time.Millisecond):
		}
	}
}
