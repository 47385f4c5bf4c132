package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/castellan-dev/castellan/ca/authn"
	"github.com/castellan-dev/castellan/ca/authz"
	"github.com/castellan-dev/castellan/ca/bundle"
	"github.com/castellan-dev/castellan/cmd/castellan-server/internal/config"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// k8sSyncTimeout bounds the wait for the pod informer at start.
const k8sSyncTimeout = 2 * time.Minute

// kubeClient returns a client from kubeconfig, or the in-cluster one.
func kubeClient(kubeconfig string) (kubernetes.Interface, error) {
	var (
		rc  *rest.Config
		err error
	)
	if kubeconfig != "" {
		rc, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	} else {
		rc, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("castellan-server: Kubernetes client (--kubeconfig, or in-cluster): %w", err)
	}
	return kubernetes.NewForConfig(rc)
}

// publishBundle publishes b as the trust bundle ConfigMap of every
// namespace when --k8s-bundle-configmaps is set, and keeps them current
// until ctx ends. It returns the function that republishes a new bundle
// (a CA rotation), nil when ConfigMaps are not published.
func publishBundle(ctx context.Context, cfg config.Config, b *x509bundle.Bundle, reg *prometheus.Registry, log *slog.Logger) (func(*x509bundle.Bundle) error, error) {
	if !cfg.K8sBundleConfigMaps {
		return nil, nil
	}
	client, err := kubeClient(cfg.Kubeconfig)
	if err != nil {
		return nil, err
	}
	p, err := bundle.NewPublisher(client, bundle.Config{Logger: log, Registry: reg})
	if err != nil {
		return nil, err
	}
	if err := p.SetBundle(b); err != nil {
		return nil, err
	}
	go func() {
		if err := p.Run(ctx); err != nil && ctx.Err() == nil {
			log.Error("trust bundle ConfigMaps are no longer kept current", "error", err.Error())
		}
	}()
	return p.SetBundle, nil
}

// kubernetesAuth returns the Kubernetes node attestor and pod authorizer
// when --k8s-agent-sa is set (nil, nil otherwise). The pod informer runs
// until ctx ends; it has synced when this returns.
func kubernetesAuth(ctx context.Context, cfg config.Config, td spiffeid.TrustDomain, reg *prometheus.Registry, log *slog.Logger) (authn.NodeAttestor, authz.Authorizer, error) {
	if cfg.K8sAgentSA == "" {
		return nil, nil, nil
	}
	ns, name, err := authn.ParseServiceAccount(cfg.K8sAgentSA)
	if err != nil {
		return nil, nil, err
	}
	client, err := kubeClient(cfg.Kubeconfig)
	if err != nil {
		return nil, nil, err
	}
	att, err := authn.NewTokenReviewAttestor(client, ns, name, authn.TokenReviewConfig{Registry: reg})
	if err != nil {
		return nil, nil, err
	}
	pods, err := authz.NewPods(client, td, authz.PodsConfig{})
	if err != nil {
		return nil, nil, err
	}
	go pods.Run(ctx)
	sctx, cancel := context.WithTimeout(ctx, k8sSyncTimeout)
	defer cancel()
	if err := pods.WaitForSync(sctx); err != nil {
		return nil, nil, fmt.Errorf("castellan-server: reading pods from the Kubernetes API server (check RBAC: pods list/watch): %w", err)
	}
	log.Info("Kubernetes mode: agents attest with service-account tokens", "agent_service_account", cfg.K8sAgentSA)
	return att, pods, nil
}
