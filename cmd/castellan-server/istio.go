package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/castellan-dev/castellan/ca/authn"
	"github.com/castellan-dev/castellan/ca/authority"
	"github.com/castellan-dev/castellan/ca/authz"
	"github.com/castellan-dev/castellan/ca/istio"
	"github.com/castellan-dev/castellan/ca/ledger"
	"github.com/castellan-dev/castellan/ca/server"
	"github.com/castellan-dev/castellan/cmd/castellan-server/internal/config"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// serveIstio adds Istio's CA API to srv's main gRPC port when --istio-api
// is set. Kubernetes tokens are accepted when a Kubernetes client is
// available (--kubeconfig, or in-cluster); without one only client SVIDs
// are. pods is the pod authorizer of --k8s-agent-sa, reused for
// --istio-trusted-node-sa when it is a *authz.Pods.
func serveIstio(ctx context.Context, cfg config.Config, td spiffeid.TrustDomain, srv *server.Server, auth *authority.Authority,
	led *ledger.Ledger, pods authz.Authorizer, log *slog.Logger) error {
	if !cfg.IstioAPI {
		return nil
	}
	icfg := istio.Config{Server: srv, Authority: auth, Ledger: led, Logger: log,
		TrustedNodeAccounts: cfg.IstioTrustedNodeSAs}
	if p, ok := pods.(*authz.Pods); ok {
		icfg.Pods = p // client-certificate renewals: a live pod on the certificate's node
	}
	client, err := kubeClient(cfg.Kubeconfig)
	switch {
	case err == nil:
		if icfg.Tokens, err = authn.NewTokenReviewer(client, istio.Audience, authn.TokenReviewConfig{}); err != nil {
			return err
		}
	case cfg.Kubeconfig != "" || len(cfg.IstioTrustedNodeSAs) > 0:
		return fmt.Errorf("castellan-server: --istio-api: %w", err)
	default:
		log.Warn("Istio CA API: no Kubernetes client (no --kubeconfig and not in a cluster); only callers with a client SVID are served", "error", err.Error())
	}
	if len(cfg.IstioTrustedNodeSAs) > 0 {
		p, ok := pods.(*authz.Pods)
		if !ok {
			if p, err = authz.NewPods(client, td, authz.PodsConfig{}); err != nil {
				return err
			}
			go p.Run(ctx)
			sctx, cancel := context.WithTimeout(ctx, k8sSyncTimeout)
			defer cancel()
			if err := p.WaitForSync(sctx); err != nil {
				return fmt.Errorf("castellan-server: reading pods from the Kubernetes API server (check RBAC: pods list/watch): %w", err)
			}
		}
		icfg.Pods = p
	}
	svc, err := istio.New(icfg)
	if err != nil {
		return err
	}
	srv.ServePublic(istio.ServiceName, svc.Register)
	log.Info("serving Istio's CA API", "service", istio.ServiceName, "kubernetes_tokens", icfg.Tokens != nil,
		"trusted_node_accounts", cfg.IstioTrustedNodeSAs)
	return nil
}
