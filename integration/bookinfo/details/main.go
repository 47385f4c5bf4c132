// Command details is Bookinfo's details service. It takes its identity
// (spiffe://<td>/ns/default/sa/bookinfo-details) from the SPIFFE Workload
// API and serves GET /details/{id} over mutual TLS to productpage only.
package main

import (
	"context"
	"flag"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/castellan-dev/castellan/integration/bookinfo/internal/catalog"
	"github.com/castellan-dev/castellan/integration/bookinfo/internal/details"
	"github.com/castellan-dev/castellan/integration/bookinfo/internal/identity"
	"github.com/castellan-dev/castellan/integration/bookinfo/internal/server"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:9081", "mTLS address to serve on")
	socket := flag.String("socket", "", "path of the agent's Workload API socket (required)")
	tdName := flag.String("trust-domain", "cluster.local", "trust domain of the mesh")
	namespace := flag.String("namespace", "default", "namespace of the Bookinfo services, in their peers' SPIFFE IDs (spiffe://<td>/ns/<namespace>/sa/bookinfo-<service>)")
	wait := flag.Duration("identity-timeout", 2*time.Minute, "how long to wait for the first SVID")
	flag.Parse()
	log := server.Logger("details")
	if err := run(*listen, *socket, *tdName, *namespace, *wait); err != nil {
		log.Error("details stopped", "error", err)
		os.Exit(1)
	}
}

func run(listen, socket, tdName, namespace string, wait time.Duration) error {
	log := server.Logger("details")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	td, err := spiffeid.TrustDomainFromString(tdName)
	if err != nil {
		return err
	}
	productpage, err := identity.ServiceIn(td, namespace, "productpage")
	if err != nil {
		return err
	}
	waitCtx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	src, err := identity.WorkloadAPI(waitCtx, socket)
	if err != nil {
		return err
	}
	defer src.Close()
	srv := &http.Server{
		Addr:              listen,
		Handler:           details.Handler(catalog.Default()),
		TLSConfig:         identity.ServerTLS(src, productpage),
		ReadHeaderTimeout: 5 * time.Second,
	}
	return server.Serve(ctx, srv, log)
}
