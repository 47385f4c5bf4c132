package authz

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/refusal"
	"github.com/castellan-dev/castellan/integration/kubetest"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
)

var testTD = spiffeid.RequireTrustDomainFromString("cluster.local")

func startPods(t *testing.T, env *kubetest.Env, cfg PodsConfig) *Pods {
	t.Helper()
	p, err := NewPods(env.Client(), testTD, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	if err := p.WaitForSync(wctx); err != nil {
		t.Fatal(err)
	}
	return p
}

func wantDenied(t *testing.T, err error, reason, msgPart string) {
	t.Helper()
	var d *refusal.Error
	if !errors.As(err, &d) {
		t.Fatalf("got %v, want a denial (%s)", err, reason)
	}
	if d.Reason != reason {
		t.Fatalf("reason %q (%v), want %q", d.Reason, err, reason)
	}
	if st, _ := status.FromError(err); st.Code() != codes.PermissionDenied {
		t.Fatalf("code %v, want PermissionDenied", st.Code())
	}
	if !strings.Contains(err.Error(), msgPart) {
		t.Fatalf("message %q does not say %q", err, msgPart)
	}
}

func TestPodsNodeRestrictionOnRealAPIServer(t *testing.T) {
	env := kubetest.Start(t)
	env.CreateNamespace("shop")
	env.CreateServiceAccount("shop", "cart")
	env.CreateServiceAccount("shop", "payments")
	env.CreateNode("node-a")
	env.CreateNode("node-b")
	onA := env.CreatePod("shop", "cart-a", "cart", "node-a")
	onB := env.CreatePod("shop", "cart-b", "cart", "node-b")
	pay := env.CreatePod("shop", "payments-a", "payments", "node-a")
	p := startPods(t, env, PodsConfig{Wait: 500 * time.Millisecond})
	ctx := context.Background()
	cart := spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/cart")

	g, err := p.Authorize(ctx, Request{Node: "node-a", ID: cart, PodUID: string(onA.UID)})
	if err != nil {
		t.Fatalf("pod on the caller's node refused: %v", err)
	}
	if g.EntryID != string(onA.UID) {
		t.Errorf("grant names %q, want the pod UID", g.EntryID)
	}
	if n := len(p.OnNode("node-a")); n != 2 {
		t.Errorf("node index holds %d pods for node-a, want 2", n)
	}

	t.Run("pod on another node", func(t *testing.T) {
		_, err := p.Authorize(ctx, Request{Node: "node-a", ID: cart, PodUID: string(onB.UID)})
		wantDenied(t, err, ReasonPodOtherNode, `runs on node "node-b", not on the caller's node "node-a"`)
	})
	t.Run("pod with another service account", func(t *testing.T) {
		_, err := p.Authorize(ctx, Request{Node: "node-a", ID: cart, PodUID: string(pay.UID)})
		wantDenied(t, err, ReasonPodOtherAccount, "runs as service account shop/payments")
	})
	t.Run("identity in another namespace", func(t *testing.T) {
		id := spiffeid.RequireFromString("spiffe://cluster.local/ns/other/sa/cart")
		_, err := p.Authorize(ctx, Request{Node: "node-a", ID: id, PodUID: string(onA.UID)})
		wantDenied(t, err, ReasonPodOtherAccount, "not other/cart")
	})
	t.Run("not a service-account identity", func(t *testing.T) {
		for _, s := range []string{"spiffe://cluster.local/castellan/agent/node-a", "spiffe://evil.example/ns/shop/sa/cart", "spiffe://cluster.local/ns/shop/sa/cart/x"} {
			_, err := p.Authorize(ctx, Request{Node: "node-a", ID: spiffeid.RequireFromString(s), PodUID: string(onA.UID)})
			wantDenied(t, err, ReasonNotPodIdentity, "/ns/<namespace>/sa/<service-account>")
		}
	})
	t.Run("unknown pod", func(t *testing.T) {
		_, err := p.Authorize(ctx, Request{Node: "node-a", ID: cart, PodUID: "8a1c7a4e-0000-4000-8000-000000000000"})
		wantDenied(t, err, ReasonPodNotFound, "no pod with uid")
	})
	t.Run("failed pod", func(t *testing.T) {
		pod := env.CreatePod("shop", "cart-failed", "cart", "node-a")
		pod.Status.Phase = corev1.PodFailed
		if _, err := env.Client().CoreV1().Pods("shop").UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, func() error {
			_, err := p.Authorize(ctx, Request{Node: "node-a", ID: cart, PodUID: string(pod.UID)})
			return err
		}, ReasonPodTerminated, "has terminated (phase Failed)")
	})
	t.Run("pod being deleted", func(t *testing.T) {
		pod := env.CreatePod("shop", "cart-deleting", "cart", "node-a")
		// No kubelet confirms the deletion: the pod stays, with a
		// deletion timestamp, as during a real graceful shutdown.
		if err := env.Client().CoreV1().Pods("shop").Delete(ctx, pod.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, func() error {
			_, err := p.Authorize(ctx, Request{Node: "node-a", ID: cart, PodUID: string(pod.UID)})
			return err
		}, ReasonPodTerminated, "is being deleted")
	})
	t.Run("deleted pod", func(t *testing.T) {
		pod := env.CreatePod("shop", "cart-deleted", "cart", "node-a")
		zero := int64(0)
		if err := env.Client().CoreV1().Pods("shop").Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
			t.Fatal(err)
		}
		eventually(t, func() error {
			_, err := p.Authorize(ctx, Request{Node: "node-a", ID: cart, PodUID: string(pod.UID)})
			return err
		}, ReasonPodNotFound, "no pod with uid")
	})
}

// eventually retries f (bounded: 10 s) until it returns the denial wanted,
// since the informer sees API changes shortly after they are made.
func eventually(t *testing.T, f func() error, reason, msg string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		err = f()
		var d *refusal.Error
		if errors.As(err, &d) && d.Reason == reason {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	wantDenied(t, err, reason, msg)
}

func TestPodsRefuseBeforeSync(t *testing.T) {
	p, err := NewPods(fake.NewClientset(), testTD, PodsConfig{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Authorize(context.Background(), Request{Node: "n", ID: spiffeid.RequireFromString("spiffe://cluster.local/ns/a/sa/b"), PodUID: "u"})
	wantDenied(t, err, ReasonPodsNotSynced, "retry shortly")
}

// PodsConfig's zero Wait is DefaultPodWait; any other value is kept.
func TestPodsConfigWaitDefaults(t *testing.T) {
	for _, tc := range []struct{ set, want time.Duration }{
		{0, DefaultPodWait}, {500 * time.Millisecond, 500 * time.Millisecond}, {-1, -1},
	} {
		p, err := NewPods(fake.NewClientset(), testTD, PodsConfig{Wait: tc.set})
		if err != nil {
			t.Fatal(err)
		}
		if p.wait != tc.want {
			t.Errorf("PodsConfig{Wait: %v}: waits %v, want %v", tc.set, p.wait, tc.want)
		}
	}
}

func TestSlimPodKeepsOnlyWhatTheRuleNeeds(t *testing.T) {
	now := metav1.Now()
	in := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u", ResourceVersion: "7", DeletionTimestamp: &now,
			Labels: map[string]string{"a": "b"}, Annotations: map[string]string{"big": strings.Repeat("x", 1000)}},
		Spec:   corev1.PodSpec{NodeName: "n", ServiceAccountName: "sa", Containers: []corev1.Container{{Name: "c", Image: "i"}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.1"},
	}
	out, err := SlimPod(in)
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*corev1.Pod)
	if got.Name != "p" || got.Namespace != "ns" || got.UID != "u" || got.ResourceVersion != "7" || got.DeletionTimestamp == nil ||
		got.Spec.NodeName != "n" || got.Spec.ServiceAccountName != "sa" || got.Status.Phase != corev1.PodRunning {
		t.Fatalf("lost a needed field: %+v", got)
	}
	if got.Labels != nil || got.Annotations != nil || got.Spec.Containers != nil || got.Status.PodIP != "" {
		t.Fatalf("kept unneeded fields: %+v", got)
	}
	tomb := tombstone{}
	if o, _ := SlimPod(tomb); o != tomb {
		t.Fatal("non-pod objects must pass unchanged")
	}
}

type tombstone struct{}

// BenchmarkPodsAuthorize measures one node-restriction decision with 2,000
// pods in the informer (no API call per request).
func BenchmarkPodsAuthorize(b *testing.B) {
	c := fake.NewClientset()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := range 2000 {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p%d", i), Namespace: "shop", UID: types.UID(fmt.Sprintf("uid-%d", i))},
			Spec:       corev1.PodSpec{NodeName: fmt.Sprintf("node-%d", i%50), ServiceAccountName: "cart"},
			Status:     corev1.PodStatus{Phase: corev1.PodRunning},
		}
		if _, err := c.CoreV1().Pods("shop").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	p, err := NewPods(c, testTD, PodsConfig{})
	if err != nil {
		b.Fatal(err)
	}
	go p.Run(ctx)
	if err := p.WaitForSync(ctx); err != nil {
		b.Fatal(err)
	}
	req := Request{Node: "node-7", ID: spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/cart"), PodUID: "uid-1007"}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := p.Authorize(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}
