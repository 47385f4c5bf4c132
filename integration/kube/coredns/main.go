// Command kube-coredns is CoreDNS (github.com/coredns/coredns) with only
// the plugins a test cluster's DNS needs: kubernetes (Service and pod
// names from the API), forward, cache, errors, health, ready, log,
// loadbalance and loop. It runs exactly like the upstream coredns binary
// (coremain.Run: -conf Corefile, -dns.port, -version). Its own module, so
// that CoreDNS builds with the dependency versions it is released with;
// built once into the cache by build.sh.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	// The plugins, registered by their init functions; the order in which
	// they run is dnsserver.Directives, as upstream.
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/ready"
)

var _ = dnsserver.Directives // the directive order the plugins above plug into

func main() {
	coremain.Run()
}
