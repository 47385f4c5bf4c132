// Command castellan-demo runs Bookinfo over mutual TLS on this machine: it
// starts castellan-server, one castellan-agent and the four Bookinfo
// services on 127.0.0.1, registers one identity per service (selected by
// the unix path of its executable), waits until the product page is
// served end to end, prints where to look, and runs in the foreground
// until Ctrl-C or SIGTERM, when it stops everything it started.
//
// All state lives under one directory (--dir, default $DEMO_DIR or
// ./.demo). Each run starts from a fresh CA and agent: it deletes the
// previous run's state and logs but keeps the binaries it built, so
// running it twice in a row works and is quick. It refuses to start while
// another demo is running on the same directory.
//
// --server-arg and --agent-arg (repeatable) pass one more argument each to
// castellan-server or castellan-agent, after the demo's own, for what the
// demo does not set: a short --publish-delay to watch a CA rotation, a
// plug-in CA's --root-cert/--intermediate-cert/--intermediate-key, a
// witness and --log-policy enforce. The demo's own flags (addresses,
// directories, trust domain, TTL) cannot be overridden this way.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	cfg := config{}
	flag.StringVar(&cfg.dir, "dir", envOr("DEMO_DIR", ".demo"), "state directory (env DEMO_DIR); cleared at start except for built binaries")
	flag.StringVar(&cfg.binDir, "bin", "", "directory holding castellan-server, castellan-agent, castellanctl and bookinfo/<service>; missing ones are built with go build")
	flag.DurationVar(&cfg.ttl, "svid-ttl", 2*time.Minute, "lifetime of the workload SVIDs the CA issues")
	flag.StringVar(&cfg.trustDomain, "trust-domain", "cluster.local", "trust domain")
	flag.StringVar(&cfg.serverAddr, "server-listen", "127.0.0.1:8443", "castellan-server gRPC address")
	flag.StringVar(&cfg.serverHTTP, "server-http-listen", "127.0.0.1:9090", "castellan-server metrics/health address")
	flag.StringVar(&cfg.agentHTTP, "agent-http-listen", "127.0.0.1:9091", "castellan-agent metrics/health address")
	flag.IntVar(&cfg.portBase, "bookinfo-port", 9080, "productpage port; details, ratings and reviews v1..v3 use the next five")
	reviews := flag.String("reviews", "v2,v3", "reviews versions to run (v1 no stars, v2 black, v3 red); productpage calls them in turn")
	flag.DurationVar(&cfg.readyTimeout, "ready-timeout", 3*time.Minute, "how long to wait for everything to come up")
	flag.Var(&argList{&cfg.serverArgs}, "server-arg", "one more argument for castellan-server, after the demo's own (repeatable), e.g. --server-arg=--publish-delay=30s")
	flag.Var(&argList{&cfg.agentArgs}, "agent-arg", "one more argument for castellan-agent, after the demo's own (repeatable), e.g. --agent-arg=--log-policy=enforce")
	flag.Parse()
	cfg.reviews = strings.Split(*reviews, ",")

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// argList is a repeatable flag collecting its values in order.
type argList struct{ p *[]string }

func (a *argList) String() string {
	if a.p == nil {
		return ""
	}
	return strings.Join(*a.p, " ")
}

func (a *argList) Set(v string) error {
	*a.p = append(*a.p, v)
	return nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
