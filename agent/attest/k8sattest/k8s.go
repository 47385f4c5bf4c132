// Package k8sattest is the Kubernetes workload attestor: it finds the pod
// and container of the peer of a connection from the process's cgroups and
// the pod's identity (namespace, service account, name) from an informer
// limited to the agent's node, as k8s selectors; and it tells the agent
// which pods run on the node.
package k8sattest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/castellan-dev/castellan/agent/attest/peer"
	"github.com/castellan-dev/castellan/agent/state"
	"github.com/castellan-dev/castellan/internal/k8sid"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// Kubernetes selector values (type "k8s").
const (
	SelectorType = "k8s"
	// ReasonNotInPod is the failure reason for a process in no pod.
	ReasonNotInPod = "not_in_pod"
	// ReasonPodUnknown is the failure reason for a pod the agent cannot
	// find on its node, or a container not in that pod.
	ReasonPodUnknown = "pod_unknown"
	// DefaultPodWait is how long Attest waits for the informer to learn of
	// a pod (or container) it has not seen yet: a container often connects
	// as soon as it starts, before the kubelet has reported it.
	DefaultPodWait = 5 * time.Second
	podUIDIndex    = "uid"
)

// Pod is a pod on the agent's node that may hold an identity: scheduled
// here, not terminated and not being deleted.
type Pod struct {
	UID            string
	Namespace      string
	Name           string
	ServiceAccount string
}

// Attestor is the Kubernetes workload attestor. For a peer it reads
// /proc/PID/cgroup to find the pod UID and container ID the kubelet gave
// the process, looks the pod up in an informer limited to this node
// (field selector spec.nodeName), and returns the selectors k8s:ns:<ns>,
// k8s:sa:<service account>, k8s:pod-uid:<uid>, k8s:pod-name:<name> and,
// for a process in a container, k8s:container-id:<id>. A process in no pod,
// in a pod of another node, or in a container the pod does not list is
// refused. It also tells the agent which pods run on the node (Pods,
// Watch). Run must be running. K8s is safe for concurrent use.
type Attestor struct {
	node     string
	procRoot string
	wait     time.Duration
	informer cache.SharedIndexInformer

	mu       sync.Mutex
	watchers map[chan struct{}]struct{}
}

// Config configures New; its zero value is the defaults.
type Config struct {
	// ProcRoot is where processes are read ("": /proc).
	ProcRoot string
	// PodWait is how long Attest waits for an unknown pod or container
	// (0: DefaultPodWait).
	PodWait time.Duration
}

// New returns the attestor for node, reading pods with client.
func New(client kubernetes.Interface, node string, cfg Config) (*Attestor, error) {
	if client == nil || node == "" {
		return nil, errors.New("attest: the k8s attestor needs a Kubernetes client and the node name (--node-name)")
	}
	sel := fields.OneTermEqualSelector("spec.nodeName", node).String()
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = sel
			return client.CoreV1().Pods(metav1.NamespaceAll).List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = sel
			return client.CoreV1().Pods(metav1.NamespaceAll).Watch(ctx, o)
		},
	}
	if cfg.ProcRoot == "" {
		cfg.ProcRoot = "/proc"
	}
	if cfg.PodWait == 0 {
		cfg.PodWait = DefaultPodWait
	}
	k := &Attestor{node: node, procRoot: cfg.ProcRoot, wait: cfg.PodWait, watchers: map[chan struct{}]struct{}{}}
	k.informer = cache.NewSharedIndexInformerWithOptions(lw, &corev1.Pod{}, cache.SharedIndexInformerOptions{
		Indexers: cache.Indexers{podUIDIndex: func(obj any) ([]string, error) { return []string{string(obj.(*corev1.Pod).UID)}, nil }},
	})
	if err := k.informer.SetTransform(slimPod); err != nil {
		return nil, fmt.Errorf("attest: pod informer: %w", err)
	}
	notify := func(any) { k.notify() }
	if _, err := k.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: notify, DeleteFunc: notify,
		UpdateFunc: func(_, _ any) { k.notify() },
	}); err != nil {
		return nil, fmt.Errorf("attest: pod informer: %w", err)
	}
	return k, nil
}

// slimPod keeps what attestation needs: identity, node, phase, deletion
// and container IDs.
func slimPod(obj any) (any, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	out := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID,
			ResourceVersion: pod.ResourceVersion, DeletionTimestamp: pod.DeletionTimestamp},
		Spec:   corev1.PodSpec{NodeName: pod.Spec.NodeName, ServiceAccountName: pod.Spec.ServiceAccountName},
		Status: corev1.PodStatus{Phase: pod.Status.Phase},
	}
	for _, list := range [][]corev1.ContainerStatus{pod.Status.InitContainerStatuses, pod.Status.ContainerStatuses, pod.Status.EphemeralContainerStatuses} {
		for _, c := range list {
			if c.ContainerID != "" {
				out.Status.ContainerStatuses = append(out.Status.ContainerStatuses, corev1.ContainerStatus{ContainerID: c.ContainerID})
			}
		}
	}
	return out, nil
}

// Run runs the pod informer until ctx ends.
func (k *Attestor) Run(ctx context.Context) { k.informer.RunWithContext(ctx) }

// WaitForSync blocks until the informer has listed the node's pods once.
func (k *Attestor) WaitForSync(ctx context.Context) error {
	if !cache.WaitForCacheSync(ctx.Done(), k.informer.HasSynced) {
		return fmt.Errorf("attest: pod informer did not sync: %w", ctx.Err())
	}
	return nil
}

// Attest implements agent/attest's Attestor.
func (k *Attestor) Attest(ctx context.Context, p peer.Peer) ([]state.Selector, error) {
	if p.Process == nil {
		return nil, &peer.Error{Reason: peer.ReasonPin, Err: fmt.Errorf("peer %d is not pinned", p.PID)}
	}
	pc, err := ReadCgroups(k.procRoot, p.PID)
	if aliveErr := p.Process.Alive(); aliveErr != nil {
		return nil, aliveErr
	}
	if errors.Is(err, ErrNotInPod) {
		return nil, &peer.Error{Reason: ReasonNotInPod, Err: fmt.Errorf("process %d runs in no Kubernetes pod; only pods on node %q get identities here", p.PID, k.node)}
	}
	if err != nil {
		return nil, &peer.Error{Reason: peer.ReasonAttestor, Err: err}
	}
	pod, err := k.findPod(ctx, pc)
	if err != nil {
		return nil, &peer.Error{Reason: ReasonPodUnknown, Err: fmt.Errorf("process %d: %w", p.PID, err)}
	}
	sels := []state.Selector{
		{Type: SelectorType, Value: "ns:" + pod.Namespace},
		{Type: SelectorType, Value: "sa:" + k8sid.OfPod(pod).Name},
		{Type: SelectorType, Value: "pod-uid:" + string(pod.UID)},
		{Type: SelectorType, Value: "pod-name:" + pod.Name},
	}
	if pc.ContainerID != "" {
		sels = append(sels, state.Selector{Type: SelectorType, Value: "container-id:" + pc.ContainerID})
	}
	return sels, nil
}

// findPod returns the live pod of pc on this node, waiting up to k.wait for
// the informer to learn of it (or of the container).
func (k *Attestor) findPod(ctx context.Context, pc PodContainer) (*corev1.Pod, error) {
	ctx, cancel := context.WithTimeout(ctx, k.wait)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		pod, err := k.lookup(pc)
		if err == nil || ctx.Err() != nil {
			return pod, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-tick.C:
		}
	}
}

func (k *Attestor) lookup(pc PodContainer) (*corev1.Pod, error) {
	objs, err := k.informer.GetIndexer().ByIndex(podUIDIndex, pc.PodUID)
	if err != nil {
		return nil, err
	}
	if len(objs) == 0 {
		return nil, fmt.Errorf("pod %s is not on node %q (or does not exist)", pc.PodUID, k.node)
	}
	pod := objs[0].(*corev1.Pod)
	if !k8sid.Live(pod) {
		return nil, fmt.Errorf("pod %s/%s has terminated or is being deleted", pod.Namespace, pod.Name)
	}
	if pc.ContainerID != "" && !hasContainer(pod, pc.ContainerID) {
		return nil, fmt.Errorf("container %s is not a container of pod %s/%s", pc.ContainerID, pod.Namespace, pod.Name)
	}
	return pod, nil
}

// hasContainer reports whether the pod's status lists container id (as
// "<runtime>://<id>").
func hasContainer(pod *corev1.Pod, id string) bool {
	return slices.ContainsFunc(pod.Status.ContainerStatuses, func(c corev1.ContainerStatus) bool {
		_, cid, ok := strings.Cut(c.ContainerID, "://")
		return ok && cid == id
	})
}

// Pods returns the live pods on the node, sorted by UID.
func (k *Attestor) Pods() []Pod {
	var out []Pod
	for _, o := range k.informer.GetStore().List() {
		pod := o.(*corev1.Pod)
		if k8sid.Live(pod) {
			out = append(out, Pod{UID: string(pod.UID), Namespace: pod.Namespace, Name: pod.Name, ServiceAccount: k8sid.OfPod(pod).Name})
		}
	}
	slices.SortFunc(out, func(a, b Pod) int { return strings.Compare(a.UID, b.UID) })
	return out
}

// Watch returns a channel that receives a value after pods on the node
// change (wake-ups coalesce; read Pods), and a function ending the watch.
func (k *Attestor) Watch() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	k.mu.Lock()
	k.watchers[ch] = struct{}{}
	k.mu.Unlock()
	return ch, func() {
		k.mu.Lock()
		delete(k.watchers, ch)
		k.mu.Unlock()
	}
}

func (k *Attestor) notify() {
	k.mu.Lock()
	defer k.mu.Unlock()
	for ch := range k.watchers {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}
