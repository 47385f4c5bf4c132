// Command ratings is Bookinfo's ratings service. It takes its identity
// (spiffe://<td>/ns/default/sa/bookinfo-ratings) over Envoy SDS, as a
// sidecar would, and serves GET /ratings/{id} over mutual TLS to reviews
// only.
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
	"github.com/castellan-dev/castellan/integration/bookinfo/internal/identity"
	"github.com/castellan-dev/castellan/integration/bookinfo/internal/ratings"
	"github.com/castellan-dev/castellan/integration/bookinfo/internal/server"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:9082", "mTLS address to serve on")
	socket := flag.String("socket", "", "path of the agent's SDS socket (required)")
	tdName := flag.String("trust-domain", "cluster.local", "trust domain of the mesh")
	namespace := flag.String("namespace", "default", "namespace of the Bookinfo services, in their peers' SPIFFE IDs (spiffe://<td>/ns/<namespace>/sa/bookinfo-<service>)")
	wait := flag.Duration("identity-timeout", 2*time.Minute, "how long to wait for the first secrets")
	flag.Parse()
	log := server.Logger("ratings")
	if err := run(*listen, *socket, *tdName, *namespace, *wait); err != nil {
		log.Error("ratings stopped", "error", err)
		os.Exit(1)
	}
}

func run(listen, socket, tdName, namespace string, wait time.Duration) error {
	log := server.Logger("ratings")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	td, err := spiffeid.TrustDomainFromString(tdName)
	if err != nil {
		return err
	}
	reviews, err := identity.ServiceIn(td, namespace, "reviews")
	if err != nil {
		return err
	}
	waitCtx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	node := &corev3.Node{Id: "sidecar~127.0.0.1~ratings-v1.default~default.svc.cluster.local", Cluster: "ratings.default"}
	src, err := identity.NewSDS(waitCtx, socket, node, td, log)
	if err != nil {
		return err
	}
	defer src.Close()
	srv := &http.Server{
		Addr:              listen,
		Handler:           ratings.Handler(catalog.Default()),
		TLSConfig:         identity.ServerTLS(src, reviews),
		ReadHeaderTimeout: 5 * time.Second,
	}
	return server.Serve(ctx, srv, log)
}
