// Command reviews is Bookinfo's reviews service (--version v1, v2 or v3).
// It takes its identity (spiffe://<td>/ns/default/sa/bookinfo-reviews)
// over Envoy SDS, as a sidecar would, serves GET /reviews/{id} over mutual
// TLS to productpage only, and (v2, v3) calls ratings over mutual TLS.
package main

import (
	"context"
	"flag"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/castellan-dev/castellan/integration/bookinfo/internal/catalog"
	"github.com/castellan-dev/castellan/integration/bookinfo/internal/hop"
	"github.com/castellan-dev/castellan/integration/bookinfo/internal/identity"
	"github.com/castellan-dev/castellan/integration/bookinfo/internal/reviews"
	"github.com/castellan-dev/castellan/integration/bookinfo/internal/server"
)

type options struct {
	version, listen, ratings, socket, td, namespace string
	wait                                            time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.version, "version", "v3", "reviews version: v1 (no stars), v2 (black stars) or v3 (red stars)")
	flag.StringVar(&o.listen, "listen", "127.0.0.1:9085", "mTLS address to serve on")
	flag.StringVar(&o.ratings, "ratings", "https://127.0.0.1:9082", "base URL of the ratings service")
	flag.StringVar(&o.socket, "socket", "", "path of the agent's SDS socket (required)")
	flag.StringVar(&o.td, "trust-domain", "cluster.local", "trust domain of the mesh")
	flag.StringVar(&o.namespace, "namespace", "default", "namespace of the Bookinfo services, in their peers' SPIFFE IDs (spiffe://<td>/ns/<namespace>/sa/bookinfo-<service>)")
	flag.DurationVar(&o.wait, "identity-timeout", 2*time.Minute, "how long to wait for the first secrets")
	flag.Parse()
	log := server.Logger("reviews-" + o.version)
	if err := run(o); err != nil {
		log.Error("reviews stopped", "error", err)
		os.Exit(1)
	}
}

func run(o options) error {
	log := server.Logger("reviews-" + o.version)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	td, err := spiffeid.TrustDomainFromString(o.td)
	if err != nil {
		return err
	}
	productpage, err := identity.ServiceIn(td, o.namespace, "productpage")
	if err != nil {
		return err
	}
	ratingsID, err := identity.ServiceIn(td, o.namespace, "ratings")
	if err != nil {
		return err
	}
	waitCtx, cancel := context.WithTimeout(ctx, o.wait)
	defer cancel()
	node := &corev3.Node{Id: "sidecar~127.0.0.1~reviews-" + o.version + ".default~default.svc.cluster.local", Cluster: "reviews.default"}
	src, err := identity.NewSDS(waitCtx, o.socket, node, td, log)
	if err != nil {
		return err
	}
	defer src.Close()
	h, err := reviews.Handler(reviews.Config{
		Version: o.version,
		Catalog: catalog.Default(),
		Ratings: &hop.Client{HTTP: identity.HTTPClient(src, ratingsID, 5*time.Second), BaseURL: o.ratings, From: "reviews", To: "ratings"},
	})
	if err != nil {
		return err
	}
	srv := &http.Server{
		Addr:              o.listen,
		Handler:           h,
		TLSConfig:         identity.ServerTLS(src, productpage),
		ReadHeaderTimeout: 5 * time.Second,
	}
	return server.Serve(ctx, srv, log)
}
