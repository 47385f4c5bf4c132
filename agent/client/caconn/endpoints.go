package caconn

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/resolver"
)

// serviceConfig balances calls over every CA endpoint the resolver
// returns (round_robin, not gRPC's default pick_first, which would send
// everything to the first address) and skips an endpoint whose gRPC
// health service reports NOT_SERVING, as a replica that lost its
// datastore may. A CA without a health service counts as healthy.
const serviceConfig = `{
  "loadBalancingConfig": [{"round_robin": {}}],
  "healthCheckConfig": {"serviceName": ""}
}`

// staticScheme names the resolver of an explicit list of CA addresses.
// It is registered per connection (grpc.WithResolvers), never globally.
const staticScheme = "castellan-ca"

// target is where the agent finds the CA: a gRPC target string and, for
// an explicit list of addresses, the resolver that serves it.
type target struct {
	uri      string
	resolver resolver.Builder // nil: gRPC's own resolver for uri's scheme
}

// dialOptions returns the options that make gRPC resolve and balance t.
func (t target) dialOptions() []grpc.DialOption {
	opts := []grpc.DialOption{
		grpc.WithDefaultServiceConfig(serviceConfig),
		// A DNS TXT record must not change how the agent balances.
		grpc.WithDisableServiceConfig(),
	}
	if t.resolver != nil {
		opts = append(opts, grpc.WithResolvers(t.resolver))
	}
	return opts
}

// parseTarget validates the CA addresses an operator gave and returns the
// target that reaches them:
//   - one host:port: gRPC's DNS resolver, so every address the name
//     resolves to (a Kubernetes headless Service) is used;
//   - one dns:///host:port (or dns://resolver/host:port): the same,
//     spelled out;
//   - several host:port: a static list, balanced round-robin. A name in
//     such a list is one endpoint, dialed at its first reachable address.
func parseTarget(addrs []string) (target, error) {
	switch len(addrs) {
	case 0:
		return target{}, errors.New("client: no CA address; give --server-address host:port (repeatable)")
	case 1:
		a := addrs[0]
		if rest, ok := strings.CutPrefix(a, "dns:"); ok {
			i := strings.LastIndex(rest, "/")
			if !strings.HasPrefix(rest, "//") || i < 2 {
				return target{}, fmt.Errorf("client: CA address %q: want dns:///host:port or dns://resolver:53/host:port", a)
			}
			if err := checkHostPort(rest[i+1:]); err != nil {
				return target{}, fmt.Errorf("client: CA address %q: %w", a, err)
			}
			return target{uri: a}, nil
		}
		if err := checkHostPort(a); err != nil {
			return target{}, fmt.Errorf("client: CA address %q: %w", a, err)
		}
		return target{uri: "dns:///" + a}, nil
	}
	seen := make(map[string]bool, len(addrs))
	for _, a := range addrs {
		if strings.Contains(a, "://") || strings.HasPrefix(a, "dns:") {
			return target{}, fmt.Errorf("client: CA address %q: a dns: target must be the only CA address (it already balances over every address of its name); list host:port addresses otherwise", a)
		}
		if err := checkHostPort(a); err != nil {
			return target{}, fmt.Errorf("client: CA address %q: %w", a, err)
		}
		if seen[a] {
			return target{}, fmt.Errorf("client: CA address %q is listed twice", a)
		}
		seen[a] = true
	}
	return target{uri: staticScheme + ":///" + strings.Join(addrs, ","), resolver: staticResolver(addrs)}, nil
}

// checkHostPort accepts host:port with a non-empty host and a port in
// 1-65535.
func checkHostPort(a string) error {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return fmt.Errorf("want host:port: %w", err)
	}
	if host == "" {
		return errors.New("want host:port: the host is empty")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("want host:port: port %q is not a number in 1-65535", port)
	}
	return nil
}

// staticResolver serves a fixed list of addresses, one endpoint each.
type staticResolver []string

// Scheme implements resolver.Builder.
func (staticResolver) Scheme() string { return staticScheme }

// Build implements resolver.Builder: it hands the list to the connection
// once; there is nothing to re-resolve.
func (s staticResolver) Build(_ resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	eps := make([]resolver.Endpoint, len(s))
	for i, a := range s {
		eps[i] = resolver.Endpoint{Addresses: []resolver.Address{{Addr: a}}}
	}
	if err := cc.UpdateState(resolver.State{Endpoints: eps}); err != nil {
		return nil, fmt.Errorf("client: CA addresses: %w", err)
	}
	return staticResolver(nil), nil
}

// ResolveNow implements resolver.Resolver.
func (staticResolver) ResolveNow(resolver.ResolveNowOptions) {}

// Close implements resolver.Resolver.
func (staticResolver) Close() {}

// verifiedCreds logs and counts every CA endpoint whose TLS handshake
// fails: an address that is not the CA (its certificate does not chain to
// the trust bundle or names another SPIFFE ID) is never used, and the
// operator should know it is listed.
type verifiedCreds struct {
	credentials.TransportCredentials
	d *Dialer
}

// ClientHandshake implements credentials.TransportCredentials.
func (v verifiedCreds) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	out, info, err := v.TransportCredentials.ClientHandshake(ctx, authority, conn)
	if err != nil && ctx.Err() == nil {
		v.d.metrics.handshakeFailures.Inc()
		v.d.log.Warn("TLS handshake with a CA endpoint failed; not using it", "endpoint", conn.RemoteAddr().String(), "error", err.Error())
	}
	return out, info, err
}

// Clone implements credentials.TransportCredentials.
func (v verifiedCreds) Clone() credentials.TransportCredentials {
	return verifiedCreds{TransportCredentials: v.TransportCredentials.Clone(), d: v.d}
}
