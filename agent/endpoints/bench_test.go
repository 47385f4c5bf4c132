package endpoints

import (
	"context"
	"slices"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/castellan-dev/castellan/agent/sds"
	"github.com/castellan-dev/castellan/agent/state"
	"github.com/castellan-dev/castellan/integration/envoysds"
)

// BenchmarkSDSPush100Streams measures the time from Publish to the receipt
// of the new `default` secret on 100 SDS streams, each on its own
// connection to the real Unix socket with real attestation, each ACKing as
// Envoy does. It reports the p50 and p99 of all receipts.
func BenchmarkSDSPush100Streams(b *testing.B) {
	const streams = 100
	// 100 sidecars of one uid: a node whose Envoys all run as one user
	// (Istio's 1337) needs the per-caller limit raised above 100.
	e := start(b, nil, func(c *Config) { c.Limits.MaxConnsPerCaller = 2 * streams })
	sels := self(b)
	svids := []*x509svid.SVID{
		e.ca.Issue(b, spiffeid.RequireFromPath(e.ca.TrustDomain, "/ns/default/sa/productpage"), time.Hour),
		e.ca.Issue(b, spiffeid.RequireFromPath(e.ca.TrustDomain, "/ns/default/sa/productpage"), time.Hour),
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	receipts := make(chan time.Time, streams)
	node := &corev3.Node{Id: "bench", Cluster: "bench"}
	for i := 0; i < streams; i++ {
		conn, err := envoysds.Dial(e.sock)
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		s, err := secretv3.NewSecretDiscoveryServiceClient(conn).StreamSecrets(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: sds.SecretTypeURL, ResourceNames: []string{"default"}}); err != nil {
			b.Fatal(err)
		}
		go func() {
			for {
				r, err := s.Recv()
				if err != nil {
					if ctx.Err() == nil {
						b.Logf("stream ended: %v", err)
					}
					return
				}
				at := time.Now()
				_ = s.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: sds.SecretTypeURL, ResourceNames: []string{"default"},
					VersionInfo: r.GetVersionInfo(), ResponseNonce: r.GetNonce()})
				receipts <- at
			}
		}()
	}
	waitAll := func(t0 time.Time, lat []time.Duration) []time.Duration {
		timeout := time.After(10 * time.Second)
		for n := range streams {
			if n < 0 {
				break
			}
			select {
			case at := <-receipts:
				lat = append(lat, at.Sub(t0))
			case <-timeout:
				mfs, _ := e.reg.Gather()
				for _, mf := range mfs {
					b.Log(mf.String())
				}
				b.Fatalf("only %d of %d streams received the push within 10s", n, streams)
			}
		}
		return lat
	}
	waitAll(time.Now(), nil) // initial responses
	var lat []time.Duration
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		t0 := time.Now()
		e.store.Publish([]state.Identity{{EntryID: "e1", Selectors: sels, SVID: svids[i%2]}}, e.ca.Bundle())
		lat = waitAll(t0, lat)
	}
	b.StopTimer()
	slices.Sort(lat)
	pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}
