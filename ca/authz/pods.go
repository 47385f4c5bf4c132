package authz

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/castellan-dev/castellan/internal/k8sid"
)

// Reasons for refused pod requests.
const (
	ReasonNotPodIdentity  = "not_pod_identity"    // the ID is not spiffe://<td>/ns/<ns>/sa/<sa>
	ReasonPodNotFound     = "pod_not_found"       // no pod has the UID
	ReasonPodOtherNode    = "pod_other_node"      // the pod runs on another node
	ReasonPodTerminated   = "pod_terminated"      // Succeeded, Failed or being deleted
	ReasonPodOtherAccount = "pod_service_account" // the pod runs as another service account
	ReasonPodsNotSynced   = "pods_not_synced"     // the pod informer has not synced yet
)

// Pod index names.
const (
	podsByUID  = "uid"
	podsByNode = "node"
)

// DefaultPodWait is how long Authorize waits for a pod it does not know yet
// to reach the informer (a pod just created may be announced to the agent
// before it reaches the CA).
const DefaultPodWait = 2 * time.Second

// Pods is the Kubernetes node-restriction rule: an agent on node N may
// obtain spiffe://<td>/ns/<ns>/sa/<sa> for the pod with UID U only if the
// API server says U is scheduled on N, is neither terminated (phase
// Succeeded or Failed) nor being deleted, and runs in namespace ns as
// service account sa. Pods are read from an informer over all pods that
// keeps only the fields the rule needs, indexed by UID and node. Run must
// be running for Authorize to succeed. Pods is safe for concurrent use.
type Pods struct {
	td       spiffeid.TrustDomain
	informer cache.SharedIndexInformer
	wait     time.Duration
}

// PodsConfig holds the settings of Pods; its zero value is the default.
type PodsConfig struct {
	// Wait is how long Authorize waits for an unknown pod (0:
	// DefaultPodWait; negative: it does not wait).
	Wait time.Duration
}

// NewPods returns the rule for trust domain td, reading pods with client.
func NewPods(client kubernetes.Interface, td spiffeid.TrustDomain, cfg PodsConfig) (*Pods, error) {
	if client == nil {
		return nil, errors.New("authz: pod authorization needs a Kubernetes client")
	}
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return client.CoreV1().Pods(metav1.NamespaceAll).List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return client.CoreV1().Pods(metav1.NamespaceAll).Watch(ctx, o)
		},
	}
	inf := cache.NewSharedIndexInformerWithOptions(lw, &corev1.Pod{}, cache.SharedIndexInformerOptions{
		Indexers: cache.Indexers{
			podsByUID:  func(obj any) ([]string, error) { return []string{string(obj.(*corev1.Pod).UID)}, nil },
			podsByNode: func(obj any) ([]string, error) { return []string{obj.(*corev1.Pod).Spec.NodeName}, nil },
		},
	})
	if err := inf.SetTransform(SlimPod); err != nil {
		return nil, fmt.Errorf("authz: pod informer: %w", err)
	}
	if cfg.Wait == 0 {
		cfg.Wait = DefaultPodWait
	}
	return &Pods{td: td, informer: inf, wait: cfg.Wait}, nil
}

// SlimPod keeps only what node restriction needs of a pod: name,
// namespace, UID, resource version, deletion timestamp, node, service
// account and phase. Other objects (informer tombstones) pass unchanged.
func SlimPod(obj any) (any, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:              pod.Name,
			Namespace:         pod.Namespace,
			UID:               pod.UID,
			ResourceVersion:   pod.ResourceVersion,
			DeletionTimestamp: pod.DeletionTimestamp,
		},
		Spec:   corev1.PodSpec{NodeName: pod.Spec.NodeName, ServiceAccountName: pod.Spec.ServiceAccountName},
		Status: corev1.PodStatus{Phase: pod.Status.Phase},
	}, nil
}

// Run runs the pod informer until ctx ends.
func (p *Pods) Run(ctx context.Context) { p.informer.RunWithContext(ctx) }

// WaitForSync blocks until the informer has listed every pod once, or ctx
// ends.
func (p *Pods) WaitForSync(ctx context.Context) error {
	if !cache.WaitForCacheSync(ctx.Done(), p.informer.HasSynced) {
		return fmt.Errorf("authz: pod informer did not sync: %w", ctx.Err())
	}
	return nil
}

// OnNode returns the pods the informer holds for node.
func (p *Pods) OnNode(node string) []*corev1.Pod {
	objs, _ := p.informer.GetIndexer().ByIndex(podsByNode, node)
	out := make([]*corev1.Pod, 0, len(objs))
	for _, o := range objs {
		out = append(out, o.(*corev1.Pod))
	}
	return out
}

// Authorize implements Authorizer for requests naming a pod UID.
func (p *Pods) Authorize(ctx context.Context, req Request) (Grant, error) {
	acct, err := k8sid.FromID(req.ID)
	if err != nil || !req.ID.MemberOf(p.td) {
		return Grant{}, deny(ReasonNotPodIdentity, "%s is not a Kubernetes identity of trust domain %q; want spiffe://%s/ns/<namespace>/sa/<service-account>", req.ID, p.td, p.td)
	}
	if req.PodUID == "" {
		return Grant{}, deny(ReasonPodNotFound, "request for %s names no pod UID", req.ID)
	}
	if !p.informer.HasSynced() {
		return Grant{}, deny(ReasonPodsNotSynced, "the CA has not finished reading pods from the Kubernetes API server; retry shortly")
	}
	pod, err := p.pod(ctx, req.PodUID)
	if err != nil {
		return Grant{}, err
	}
	var pe *k8sid.PodError
	switch err := k8sid.CheckPod(pod, k8sid.Claim{Node: req.Node, UID: req.PodUID, Account: acct}); {
	case err == nil:
	case !errors.As(err, &pe):
		return Grant{}, err
	case pe.Problem == k8sid.OtherNode:
		return Grant{}, deny(ReasonPodOtherNode, "%v", err)
	case pe.Problem == k8sid.Terminated:
		return Grant{}, deny(ReasonPodTerminated, "%v", err)
	case pe.Problem == k8sid.OtherAccount:
		return Grant{}, deny(ReasonPodOtherAccount, "%v as %s requires", err, req.ID)
	default: // the UID index returned another pod: treat as absent
		return Grant{}, deny(ReasonPodNotFound, "%v", err)
	}
	return Grant{EntryID: string(pod.UID)}, nil
}

// pod returns the pod with uid, waiting up to p.wait for it to appear.
func (p *Pods) pod(ctx context.Context, uid string) (*corev1.Pod, error) {
	ctx, cancel := context.WithTimeout(ctx, p.wait)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		objs, err := p.informer.GetIndexer().ByIndex(podsByUID, uid)
		if err != nil {
			return nil, fmt.Errorf("authz: pod index: %w", err)
		}
		if len(objs) > 0 {
			return objs[0].(*corev1.Pod), nil
		}
		select {
		case <-ctx.Done():
			return nil, deny(ReasonPodNotFound, "no pod with uid %s exists on the Kubernetes API server (deleted, or never created)", uid)
		case <-tick.C:
		}
	}
}
