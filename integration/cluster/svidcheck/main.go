// Command svidcheck is a workload for the cluster tests: run in a pod that
// mounts the Castellan agent's socket, it prints the SPIFFE IDs the agent's
// Workload API serves it ("svidcheck: id=<id>", or "svidcheck:
// workload-error=<gRPC code>") and, for each --steal name, the outcome of
// asking the agent's SDS API for that secret by name ("svidcheck:
// steal=<name> code=<gRPC code>" or "... got=<names>"), then exits.
//
// Usage: svidcheck --socket /run/castellan/agent.sock [--steal SPIFFE-ID]...
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

const secretType = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

type names []string

func (n *names) String() string     { return strings.Join(*n, ",") }
func (n *names) Set(v string) error { *n = append(*n, v); return nil }

func main() {
	socket := flag.String("socket", "/run/castellan/agent.sock", "the agent's socket")
	wait := flag.Duration("wait", 60*time.Second, "how long to wait for the Workload API to answer")
	var steal names
	flag.Var(&steal, "steal", "a SPIFFE ID to request over SDS (repeatable)")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), *wait)
	defer cancel()
	printOwn(ctx, *socket)
	for _, name := range steal {
		printSteal(ctx, *socket, name)
	}
}

// printOwn fetches this workload's X.509-SVIDs, retrying while the agent
// has none yet (it may still be getting the pod's SVID from the CA).
func printOwn(ctx context.Context, socket string) {
	var last error
	for {
		svids, err := workloadapi.FetchX509SVIDs(ctx, workloadapi.WithAddr("unix://"+socket))
		if err == nil {
			for _, s := range svids {
				fmt.Printf("svidcheck: id=%s\n", s.ID)
			}
			return
		}
		last = err
		select {
		case <-ctx.Done():
			fmt.Printf("svidcheck: workload-error=%s\n", status.Code(last))
			fmt.Fprintf(os.Stderr, "svidcheck: %v\n", last)
			return
		case <-time.After(time.Second):
		}
	}
}

// printSteal asks the agent's SDS for a secret by name.
func printSteal(ctx context.Context, socket, name string) {
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Printf("svidcheck: steal=%s dial-error=%v\n", name, err)
		return
	}
	defer conn.Close()
	resp, err := secretv3.NewSecretDiscoveryServiceClient(conn).FetchSecrets(ctx, &discoveryv3.DiscoveryRequest{
		Node:          &corev3.Node{Id: "svidcheck", Cluster: "svidcheck"},
		ResourceNames: []string{name},
		TypeUrl:       secretType,
	})
	if err != nil {
		fmt.Printf("svidcheck: steal=%s code=%s\n", name, status.Code(err))
		fmt.Fprintf(os.Stderr, "svidcheck: %v\n", err)
		return
	}
	var got []string
	for _, r := range resp.GetResources() {
		got = append(got, r.GetTypeUrl())
	}
	fmt.Printf("svidcheck: steal=%s got=%d resources %s\n", name, len(resp.GetResources()), strings.Join(got, ","))
}
