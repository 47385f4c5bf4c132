package k8sid

import (
	"errors"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

func TestFromIDAndIDRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		id      string
		want    ServiceAccount
		refused bool
	}{
		{id: "spiffe://example.org/ns/shop/sa/cart", want: ServiceAccount{"shop", "cart"}},
		{id: "spiffe://example.org/ns/default/sa/default", want: ServiceAccount{"default", "default"}},
		{id: "spiffe://other.org/ns/shop/sa/cart", want: ServiceAccount{"shop", "cart"}}, // trust domain is the caller's check
		{id: "spiffe://example.org/ns/shop/sa/cart/extra", refused: true},
		{id: "spiffe://example.org/ns/shop/sa", refused: true},
		{id: "spiffe://example.org/sa/cart/ns/shop", refused: true},
		{id: "spiffe://example.org/namespace/shop/sa/cart", refused: true},
		{id: "spiffe://example.org/castellan/agent/node-a", refused: true},
		{id: "spiffe://example.org", refused: true},
	} {
		got, err := FromID(spiffeid.RequireFromString(tc.id))
		if tc.refused {
			if err == nil || !errors.Is(err, ErrNotServiceAccount) || !strings.Contains(err.Error(), "/ns/<namespace>/sa/<service-account>") {
				t.Errorf("FromID(%s) = %v, %v; want ErrNotServiceAccount naming the form", tc.id, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("FromID(%s) = %v, %v; want %v", tc.id, got, err, tc.want)
			continue
		}
		id, err := got.ID(spiffeid.RequireFromString(tc.id).TrustDomain())
		if err != nil || id.String() != tc.id {
			t.Errorf("%v.ID() = %s, %v; want %s", got, id, err, tc.id)
		}
	}
}

func TestNewRefusesBadSegments(t *testing.T) {
	for _, tc := range []struct{ ns, name string }{
		{"", "cart"}, {"shop", ""}, {"a/b", "cart"}, {"shop", "c/d"}, {".", "cart"}, {"shop", ".."}, {"shop", "Ünïcode"},
	} {
		if a, err := New(tc.ns, tc.name); err == nil || !errors.Is(err, ErrNotServiceAccount) {
			t.Errorf("New(%q, %q) = %v, %v; want ErrNotServiceAccount", tc.ns, tc.name, a, err)
		}
		if _, err := (ServiceAccount{tc.ns, tc.name}).ID(td); err == nil {
			t.Errorf("ServiceAccount{%q, %q}.ID made an ID", tc.ns, tc.name)
		}
	}
	a, err := New("shop", "cart")
	if err != nil || a.String() != "shop/cart" || a.Username() != "system:serviceaccount:shop:cart" {
		t.Errorf("New(shop, cart) = %v (%q, %q), %v", a, a, a.Username(), err)
	}
}

func pod(mut func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "cart-1", Namespace: "shop", UID: "uid-1"},
		Spec:       corev1.PodSpec{NodeName: "node-a", ServiceAccountName: "cart"},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	}
	if mut != nil {
		mut(p)
	}
	return p
}

func TestOfPodDefaultsTheAccount(t *testing.T) {
	if got := OfPod(pod(nil)); got != (ServiceAccount{"shop", "cart"}) {
		t.Errorf("OfPod = %v", got)
	}
	if got := OfPod(pod(func(p *corev1.Pod) { p.Spec.ServiceAccountName = "" })); got != (ServiceAccount{"shop", DefaultServiceAccount}) {
		t.Errorf("OfPod without an account = %v, want shop/default", got)
	}
}

func TestCheckPod(t *testing.T) {
	cart := ServiceAccount{"shop", "cart"}
	claim := Claim{Node: "node-a", UID: "uid-1", Account: cart}
	now := metav1.Now()
	for _, tc := range []struct {
		name  string
		pod   *corev1.Pod
		claim Claim
		want  Problem
		says  string
	}{
		{"matches", pod(nil), claim, 0, ""},
		{"pending pod matches", pod(func(p *corev1.Pod) { p.Status.Phase = corev1.PodPending }), claim, 0, ""},
		{"default account", pod(func(p *corev1.Pod) { p.Spec.ServiceAccountName = "" }),
			Claim{Node: "node-a", UID: "uid-1", Account: ServiceAccount{"shop", "default"}}, 0, ""},
		{"other node", pod(func(p *corev1.Pod) { p.Spec.NodeName = "node-b" }), claim, OtherNode,
			`runs on node "node-b", not on the caller's node "node-a"`},
		{"unscheduled", pod(func(p *corev1.Pod) { p.Spec.NodeName = "" }), claim, OtherNode, `runs on node ""`},
		{"being deleted", pod(func(p *corev1.Pod) { p.DeletionTimestamp = &now }), claim, Terminated, "is being deleted"},
		{"succeeded", pod(func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }), claim, Terminated, "has terminated (phase Succeeded)"},
		{"failed", pod(func(p *corev1.Pod) { p.Status.Phase = corev1.PodFailed }), claim, Terminated, "has terminated (phase Failed)"},
		{"other account", pod(func(p *corev1.Pod) { p.Spec.ServiceAccountName = "payments" }), claim, OtherAccount,
			"runs as service account shop/payments, not shop/cart"},
		{"same account name, other namespace", pod(func(p *corev1.Pod) { p.Namespace = "shop2" }), claim, OtherAccount,
			"runs as service account shop2/cart"},
		{"unset account is not any account", pod(func(p *corev1.Pod) { p.Spec.ServiceAccountName = "" }), claim, OtherAccount,
			"runs as service account shop/default"},
		{"other uid", pod(func(p *corev1.Pod) { p.UID = "uid-2" }), claim, OtherUID, "is not the pod with uid uid-1"},
	} {
		err := CheckPod(tc.pod, tc.claim)
		if tc.want == 0 {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			if !RunsAs(tc.pod, tc.claim.Node, tc.claim.Account) {
				t.Errorf("%s: RunsAs = false", tc.name)
			}
			continue
		}
		var pe *PodError
		if !errors.As(err, &pe) || pe.Problem != tc.want || !strings.Contains(err.Error(), tc.says) || !strings.HasPrefix(err.Error(), "pod ") {
			t.Errorf("%s: %v, want problem %d saying %q", tc.name, err, tc.want, tc.says)
		}
		if tc.want != OtherUID && RunsAs(tc.pod, tc.claim.Node, tc.claim.Account) {
			t.Errorf("%s: RunsAs = true", tc.name)
		}
	}
}

func TestUsernameRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		user string
		want ServiceAccount
		ok   bool
	}{
		{"system:serviceaccount:shop:cart", ServiceAccount{"shop", "cart"}, true},
		{"system:serviceaccount:castellan-system:castellan-agent", ServiceAccount{"castellan-system", "castellan-agent"}, true},
		{"system:serviceaccount:shop:cart:extra", ServiceAccount{}, false},
		{"system:serviceaccount:shop:", ServiceAccount{}, false},
		{"system:serviceaccount::cart", ServiceAccount{}, false},
		{"system:serviceaccount:shop", ServiceAccount{}, false},
		{"system:serviceaccounts:shop:cart", ServiceAccount{}, false},
		{"alice", ServiceAccount{}, false},
		{"system:node:node-a", ServiceAccount{}, false},
		{"", ServiceAccount{}, false},
	} {
		got, err := FromUsername(tc.user)
		if tc.ok != (err == nil) || got != tc.want {
			t.Errorf("FromUsername(%q) = %v, %v; want %v (ok %v)", tc.user, got, err, tc.want, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrNotServiceAccount) {
			t.Errorf("FromUsername(%q): %v, want ErrNotServiceAccount", tc.user, err)
		}
		if tc.ok && got.Username() != tc.user {
			t.Errorf("%v.Username() = %q, want %q", got, got.Username(), tc.user)
		}
	}
}
