// Package bundle publishes the CA's trust bundle to Kubernetes: the
// ConfigMap castellan-ca-root-cert (key root-cert.pem, PEM roots) in every
// namespace, kept current when the bundle changes, when a namespace is
// created, and when someone edits or deletes the ConfigMap — the same
// contract as Istio's istio-ca-root-cert, so workloads can mount it.
package bundle

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// ConfigMap name, data key and the label marking ConfigMaps Castellan owns.
const (
	ConfigMapName = "castellan-ca-root-cert"
	DataKey       = "root-cert.pem"
	ManagedLabel  = "castellan.dev/managed"
)

// Publisher keeps ConfigMapName current in every namespace. Create it with
// NewPublisher, give it a bundle with SetBundle and run it with Run. It is
// safe for concurrent use.
type Publisher struct {
	client     kubernetes.Interface
	log        *slog.Logger
	namespaces cache.SharedIndexInformer
	configMaps cache.SharedIndexInformer
	queue      workqueue.TypedRateLimitingInterface[string]
	updates    *prometheus.CounterVec

	mu  sync.Mutex
	pem []byte // nil until SetBundle
}

// Config holds the settings of a Publisher; its zero value is the
// default.
type Config struct {
	// Logger receives the Publisher's logs (nil: discard).
	Logger *slog.Logger
	// Registry, when set, receives
	// castellan_ca_bundle_configmap_writes_total{action,result}.
	Registry *prometheus.Registry
}

// newWrites returns castellan_ca_bundle_configmap_writes_total registered
// in reg, or nil without a registry.
func newWrites(reg *prometheus.Registry) *prometheus.CounterVec {
	if reg == nil {
		return nil
	}
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "castellan_ca_bundle_configmap_writes_total",
		Help: "Writes of the trust-bundle ConfigMap by action (create, update) and result (ok, error).",
	}, []string{"action", "result"})
	reg.MustRegister(c)
	return c
}

// NewPublisher returns a publisher writing with client.
func NewPublisher(client kubernetes.Interface, cfg Config) (*Publisher, error) {
	if client == nil {
		return nil, errors.New("bundle: publishing the trust bundle needs a Kubernetes client")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Publisher{
		client:  client,
		log:     cfg.Logger,
		queue:   workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]()),
		updates: newWrites(cfg.Registry),
	}
	p.namespaces = cache.NewSharedIndexInformer(&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return client.CoreV1().Namespaces().List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return client.CoreV1().Namespaces().Watch(ctx, o)
		},
	}, &corev1.Namespace{}, 0, cache.Indexers{})
	byName := fields.OneTermEqualSelector("metadata.name", ConfigMapName).String()
	p.configMaps = cache.NewSharedIndexInformer(&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = byName
			return client.CoreV1().ConfigMaps(metav1.NamespaceAll).List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = byName
			return client.CoreV1().ConfigMaps(metav1.NamespaceAll).Watch(ctx, o)
		},
	}, &corev1.ConfigMap{}, 0, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	enqueueNS := func(obj any) {
		if ns, ok := obj.(*corev1.Namespace); ok {
			p.queue.Add(ns.Name)
		}
	}
	enqueueCM := func(obj any) {
		if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = t.Obj
		}
		if cm, ok := obj.(*corev1.ConfigMap); ok {
			p.queue.Add(cm.Namespace)
		}
	}
	if _, err := p.namespaces.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: enqueueNS}); err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	if _, err := p.configMaps.AddEventHandler(cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(_, obj any) { enqueueCM(obj) }, DeleteFunc: enqueueCM,
	}); err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	return p, nil
}

// SetBundle sets the bundle to publish and rewrites every namespace's
// ConfigMap if it changed.
func (p *Publisher) SetBundle(b *x509bundle.Bundle) error {
	data, err := b.Marshal()
	if err != nil {
		return fmt.Errorf("bundle: encoding trust bundle: %w", err)
	}
	p.mu.Lock()
	changed := !bytes.Equal(p.pem, data)
	p.pem = data
	p.mu.Unlock()
	if changed {
		for _, name := range p.namespaces.GetStore().ListKeys() {
			p.queue.Add(name)
		}
	}
	return nil
}

// Run watches namespaces and ConfigMaps and writes ConfigMaps until ctx
// ends. It returns an error if the informers cannot sync.
func (p *Publisher) Run(ctx context.Context) error {
	defer p.queue.ShutDown()
	go p.namespaces.RunWithContext(ctx)
	go p.configMaps.RunWithContext(ctx)
	if !cache.WaitForCacheSync(ctx.Done(), p.namespaces.HasSynced, p.configMaps.HasSynced) {
		return fmt.Errorf("bundle: namespace and ConfigMap informers did not sync: %w", ctx.Err())
	}
	go func() {
		<-ctx.Done()
		p.queue.ShutDown()
	}()
	for p.next(ctx) {
	}
	return nil
}

// next reconciles one queued namespace; it reports false on shutdown.
func (p *Publisher) next(ctx context.Context) bool {
	ns, quit := p.queue.Get()
	if quit {
		return false
	}
	defer p.queue.Done(ns)
	if err := p.reconcile(ctx, ns); err != nil {
		p.log.Warn("could not publish the trust bundle; retrying", "namespace", ns, "error", err.Error())
		p.queue.AddRateLimited(ns)
		return true
	}
	p.queue.Forget(ns)
	return true
}

// reconcile makes namespace ns hold the current bundle.
func (p *Publisher) reconcile(ctx context.Context, ns string) error {
	p.mu.Lock()
	data := p.pem
	p.mu.Unlock()
	if data == nil {
		return nil // nothing to publish yet; SetBundle enqueues again
	}
	obj, exists, err := p.namespaces.GetStore().GetByKey(ns)
	if err != nil || !exists || obj.(*corev1.Namespace).Status.Phase == corev1.NamespaceTerminating {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cms := p.client.CoreV1().ConfigMaps(ns)
	cached, exists, err := p.configMaps.GetStore().GetByKey(ns + "/" + ConfigMapName)
	if err != nil {
		return err
	}
	if !exists {
		_, err := cms.Create(ctx, p.desired(ns, data), metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			err = p.update(ctx, ns, data) // the informer is behind
		}
		p.count("create", err)
		return err
	}
	cm := cached.(*corev1.ConfigMap)
	if cm.Data[DataKey] == string(data) && len(cm.Data) == 1 && len(cm.BinaryData) == 0 {
		return nil
	}
	err = p.update(ctx, ns, data)
	p.count("update", err)
	return err
}

// update rewrites the ConfigMap from a fresh read.
func (p *Publisher) update(ctx context.Context, ns string, data []byte) error {
	cms := p.client.CoreV1().ConfigMaps(ns)
	cur, err := cms.Get(ctx, ConfigMapName, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("bundle: reading %s/%s: %w", ns, ConfigMapName, err)
	}
	want := p.desired(ns, data)
	cur.Data, cur.BinaryData = want.Data, nil
	if cur.Labels == nil {
		cur.Labels = map[string]string{}
	}
	cur.Labels[ManagedLabel] = "true"
	if _, err := cms.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("bundle: updating %s/%s: %w", ns, ConfigMapName, err)
	}
	return nil
}

func (p *Publisher) desired(ns string, data []byte) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: ConfigMapName, Namespace: ns, Labels: map[string]string{ManagedLabel: "true"}},
		Data:       map[string]string{DataKey: string(data)},
	}
}

func (p *Publisher) count(action string, err error) {
	if p.updates == nil {
		return
	}
	result := "ok"
	if err != nil {
		result = "error"
	}
	p.updates.WithLabelValues(action, result).Inc()
}
