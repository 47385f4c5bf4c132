// Command productpage is Bookinfo's front end. It takes its identity
// (spiffe://<td>/ns/default/sa/bookinfo-productpage) from the SPIFFE
// Workload API, calls details and reviews over mutual TLS, and serves the
// page /productpage and the /api/v1 JSON API over plain HTTP, as the
// ingress of the original sample does.
package main

import (
	"context"
	"flag"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/castellan-dev/castellan/integration/bookinfo/internal/catalog"
	"github.com/castellan-dev/castellan/integration/bookinfo/internal/hop"
	"github.com/castellan-dev/castellan/integration/bookinfo/internal/identity"
	"github.com/castellan-dev/castellan/integration/bookinfo/internal/productpage"
	"github.com/castellan-dev/castellan/integration/bookinfo/internal/server"
)

type options struct {
	listen, details, reviews, socket, td, namespace string
	wait                                            time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.listen, "listen", "127.0.0.1:9080", "plain-HTTP address for users")
	flag.StringVar(&o.details, "details", "https://127.0.0.1:9081", "base URL of the details service")
	flag.StringVar(&o.reviews, "reviews", "https://127.0.0.1:9084,https://127.0.0.1:9085", "comma-separated base URLs of the reviews instances, called in turn")
	flag.StringVar(&o.socket, "socket", "", "path of the agent's Workload API socket (required)")
	flag.StringVar(&o.td, "trust-domain", "cluster.local", "trust domain of the mesh")
	flag.StringVar(&o.namespace, "namespace", "default", "namespace of the Bookinfo services, in their peers' SPIFFE IDs (spiffe://<td>/ns/<namespace>/sa/bookinfo-<service>)")
	flag.DurationVar(&o.wait, "identity-timeout", 2*time.Minute, "how long to wait for the first SVID")
	flag.Parse()
	log := server.Logger("productpage")
	if err := run(o); err != nil {
		log.Error("productpage stopped", "error", err)
		os.Exit(1)
	}
}

func run(o options) error {
	log := server.Logger("productpage")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	td, err := spiffeid.TrustDomainFromString(o.td)
	if err != nil {
		return err
	}
	detailsID, err := identity.ServiceIn(td, o.namespace, "details")
	if err != nil {
		return err
	}
	reviewsID, err := identity.ServiceIn(td, o.namespace, "reviews")
	if err != nil {
		return err
	}
	waitCtx, cancel := context.WithTimeout(ctx, o.wait)
	defer cancel()
	src, err := identity.WorkloadAPI(waitCtx, o.socket)
	if err != nil {
		return err
	}
	defer src.Close()
	cfg := productpage.Config{
		Catalog: catalog.Default(),
		Details: &hop.Client{HTTP: identity.HTTPClient(src, detailsID, 5*time.Second), BaseURL: o.details, From: "productpage", To: "details"},
		Log:     log,
	}
	for _, u := range strings.Split(o.reviews, ",") {
		cfg.Reviews = append(cfg.Reviews, &hop.Client{HTTP: identity.HTTPClient(src, reviewsID, 5*time.Second), BaseURL: strings.TrimSpace(u), From: "productpage", To: "reviews"})
	}
	h, err := productpage.Handler(cfg)
	if err != nil {
		return err
	}
	srv := &http.Server{Addr: o.listen, Handler: h, ReadHeaderTimeout: 5 * time.Second}
	return server.Serve(ctx, srv, log)
}
