package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/castellan-dev/castellan/agent/attest/k8sattest"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// k8sSyncTimeout bounds the wait for the node's pod informer at start.
const k8sSyncTimeout = 2 * time.Minute

// attestors names the values of --attestor.
const (
	attestorUnix = "unix"
	attestorK8s  = "k8s"
)

// validateK8s checks the Kubernetes flags.
func validateK8s(cfg config) error {
	switch cfg.Attestor {
	case attestorUnix:
		return nil
	case attestorK8s:
		if cfg.NodeName == "" || cfg.K8sTokenFile == "" {
			return errors.New("--attestor k8s needs --node-name (the downward API's spec.nodeName) and --k8s-token-file (a projected token with audience castellan-ca)")
		}
		return nil
	default:
		return fmt.Errorf("--attestor %q: want unix or k8s", cfg.Attestor)
	}
}

// k8sAttestor starts the Kubernetes attestor for the node and waits until
// it has read the node's pods; its informer runs until ctx ends.
func k8sAttestor(ctx context.Context, cfg config) (*k8sattest.Attestor, error) {
	var (
		rc  *rest.Config
		err error
	)
	if cfg.Kubeconfig != "" {
		rc, err = clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	} else {
		rc, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("castellan-agent: kubernetes client (--kubeconfig, or in-cluster): %w", err)
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	k, err := k8sattest.New(client, cfg.NodeName, k8sattest.Config{})
	if err != nil {
		return nil, err
	}
	go k.Run(ctx)
	sctx, cancel := context.WithTimeout(ctx, k8sSyncTimeout)
	defer cancel()
	if err := k.WaitForSync(sctx); err != nil {
		return nil, fmt.Errorf("reading the node's pods (check RBAC: pods list/watch): %w", err)
	}
	return k, nil
}
