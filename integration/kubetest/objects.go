package kubetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// PodImage is the container image of pods made by CreatePod. Nothing pulls
// it: no kubelet runs.
const PodImage = "registry.k8s.io/pause:3.10"

func (e *Env) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), requestTimeout)
}

// CreateNamespace creates namespace ns and, standing in for the
// controller-manager's service-account controller, its "default"
// ServiceAccount.
func (e *Env) CreateNamespace(ns string) *corev1.Namespace {
	if e.t != nil {
		e.t.Helper()
	}
	ctx, cancel := e.ctx()
	defer cancel()
	obj, err := e.shared.client.CoreV1().Namespaces().Create(ctx,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil {
		e.fatalf("creating namespace %s: %v", ns, err)
	}
	e.CreateServiceAccount(ns, "default")
	return obj
}

// CreateServiceAccount creates ServiceAccount ns/name.
func (e *Env) CreateServiceAccount(ns, name string) *corev1.ServiceAccount {
	if e.t != nil {
		e.t.Helper()
	}
	ctx, cancel := e.ctx()
	defer cancel()
	obj, err := e.shared.client.CoreV1().ServiceAccounts(ns).Create(ctx,
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}, metav1.CreateOptions{})
	if err != nil {
		e.fatalf("creating service account %s/%s: %v", ns, name, err)
	}
	return obj
}

// CreateNode creates a Node object called name (no kubelet backs it), so
// that pods can be bound to it and their bound tokens carry its name and UID.
func (e *Env) CreateNode(name string) *corev1.Node {
	if e.t != nil {
		e.t.Helper()
	}
	ctx, cancel := e.ctx()
	defer cancel()
	obj, err := e.shared.client.CoreV1().Nodes().Create(ctx, &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:   name,
			Labels: map[string]string{corev1.LabelHostname: name},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		e.fatalf("creating node %s: %v", name, err)
	}
	return obj
}

// CreatePod creates pod ns/name running as service account sa (which must
// exist) on node nodeName (spec.nodeName; no scheduler runs), then sets its
// status as a kubelet would: phase Running, Ready, a pod IP, and one running
// container "app" with a random containerd container ID, found in
// Status.ContainerStatuses[0].ContainerID ("containerd://<64 hex>"). It
// returns the pod as stored, with its UID.
func (e *Env) CreatePod(ns, name, sa, nodeName string) *corev1.Pod {
	if e.t != nil {
		e.t.Helper()
	}
	ctx, cancel := e.ctx()
	defer cancel()
	pods := e.shared.client.CoreV1().Pods(ns)
	pod, err := pods.Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:      name,
			Namespace: ns,
			Labels:    map[string]string{"app": name},
		},
		Spec: corev1.PodSpec{
			ServiceAccountName: sa,
			NodeName:           nodeName,
			Containers: []corev1.Container{{
				Name:  "app",
				Image: PodImage,
			}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		e.fatalf("creating pod %s/%s: %v", ns, name, err)
	}

	now := metav1.NewTime(time.Now())
	pod.Status = corev1.PodStatus{
		Phase:     corev1.PodRunning,
		HostIP:    "127.0.0.1",
		PodIP:     "10.244.0.10",
		PodIPs:    []corev1.PodIP{{IP: "10.244.0.10"}},
		StartTime: &now,
		Conditions: []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
		},
		ContainerStatuses: []corev1.ContainerStatus{{
			Name:         "app",
			Image:        PodImage,
			ImageID:      PodImage,
			ContainerID:  "containerd://" + randomHex(32),
			Ready:        true,
			Started:      func() *bool { b := true; return &b }(),
			State:        corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
			RestartCount: 0,
		}},
	}
	pod, err = pods.UpdateStatus(ctx, pod, metav1.UpdateOptions{})
	if err != nil {
		e.fatalf("setting status of pod %s/%s: %v", ns, name, err)
	}
	return pod
}

// PodToken returns a service-account token for ns/sa, bound to pod
// ns/podName (a BoundObjectRef with the pod's UID), for the given audience,
// valid for ttl (the apiserver rejects less than 10 minutes). If the pod is
// on a node, its TokenReview carries the extras
// authentication.kubernetes.io/pod-name, pod-uid, node-name and node-uid.
func (e *Env) PodToken(ns, sa, podName, audience string, ttl time.Duration) string {
	if e.t != nil {
		e.t.Helper()
	}
	ctx, cancel := e.ctx()
	defer cancel()
	pod, err := e.shared.client.CoreV1().Pods(ns).Get(ctx, podName, metav1.GetOptions{})
	if err != nil {
		e.fatalf("getting pod %s/%s: %v", ns, podName, err)
	}
	secs := int64(ttl / time.Second)
	tr, err := e.shared.client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			Audiences:         []string{audience},
			ExpirationSeconds: &secs,
			BoundObjectRef: &authenticationv1.BoundObjectReference{
				Kind:       "Pod",
				APIVersion: "v1",
				Name:       pod.Name,
				UID:        pod.UID,
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		e.fatalf("requesting token for %s/%s bound to pod %s: %v", ns, sa, podName, err)
	}
	return tr.Status.Token
}

// TokenReview reviews token with the given audiences (none: the apiserver's
// own) as the admin, and returns the review's status.
func (e *Env) TokenReview(token string, audiences ...string) authenticationv1.TokenReviewStatus {
	if e.t != nil {
		e.t.Helper()
	}
	ctx, cancel := e.ctx()
	defer cancel()
	tr, err := e.shared.client.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: audiences},
	}, metav1.CreateOptions{})
	if err != nil {
		e.fatalf("token review: %v", err)
	}
	return tr.Status
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}
