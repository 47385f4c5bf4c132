package attest

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/agent/attest/attesttest"
	"github.com/castellan-dev/castellan/agent/attest/peer"
	"github.com/castellan-dev/castellan/agent/attest/unixattest"
	"github.com/castellan-dev/castellan/agent/state"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	grpcpeer "google.golang.org/grpc/peer"
)

// TestMain lets the test binary double as the workload helper process.
func TestMain(m *testing.M) { attesttest.Main(m) }

type fakeAttestor struct{ err error }

func (f fakeAttestor) Attest(context.Context, peer.Peer) ([]state.Selector, error) {
	if f.err != nil {
		return nil, f.err
	}
	return []state.Selector{{Type: "unix", Value: "uid:42"}}, nil
}

// TestCredentialsBindAttestationToCalls serves gRPC with the credentials and
// checks what FromContext returns inside a call, and which failures count.
func TestCredentialsBindAttestationToCalls(t *testing.T) {
	tests := []struct {
		name     string
		attestor Attestor
		wantSel  bool
		reason   string
	}{
		{"attested", fakeAttestor{}, true, ""},
		{"attestor fails", fakeAttestor{err: &peer.Error{Reason: peer.ReasonExe, Err: errors.New("boom")}}, false, peer.ReasonExe},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			var reasons []string
			creds := NewCredentials(tc.attestor, CredentialsConfig{Timeout: time.Second, OnFailure: func(r string) { mu.Lock(); reasons = append(reasons, r); mu.Unlock() }})
			var got []state.Selector
			var gotErr error
			srv := grpc.NewServer(grpc.Creds(creds), grpc.UnaryInterceptor(
				func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
					got, gotErr = FromContext(ctx)
					return h(ctx, req)
				}))
			healthpb.RegisterHealthServer(srv, health.NewServer())
			lis, sock := attesttest.Listen(t)
			go func() { _ = srv.Serve(lis) }()
			t.Cleanup(srv.Stop)
			conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
				t.Fatal(err)
			}
			if tc.wantSel != (len(got) == 1 && gotErr == nil) {
				t.Fatalf("FromContext = %v, %v", got, gotErr)
			}
			mu.Lock()
			defer mu.Unlock()
			if tc.reason != "" && (peer.ReasonOf(gotErr) != tc.reason || !slices.Equal(reasons, []string{tc.reason})) {
				t.Fatalf("err %v, counted %v; want reason %s once", gotErr, reasons, tc.reason)
			}
			if tc.reason == "" && len(reasons) != 0 {
				t.Fatalf("counted failures %v for a successful attestation", reasons)
			}
		})
	}
}

func TestFromContextWithoutAttestation(t *testing.T) {
	if _, err := FromContext(context.Background()); peer.ReasonOf(err) != peer.ReasonTransport {
		t.Fatalf("err = %v, want reason %s", err, peer.ReasonTransport)
	}
}

// TestCredentialsCheckHolderOnEveryCall runs the handshake on a real
// connection and checks FromContext after the client changes: every
// attestor (unix, or k8s whose selectors come from cgroups) gets the holder
// checks; only attestors that bind the process also refuse an execve.
func TestCredentialsCheckHolderOnEveryCall(t *testing.T) {
	other, second := attesttest.CopyExe(t), attesttest.CopyExe(t)
	tests := []struct {
		name     string
		attestor Attestor
		command  string
		reason   string // "": still attested
	}{
		{"unix: shared", unixattest.New(), "share", peer.ReasonShared},
		{"k8s-like: shared", fakeAttestor{}, "share", peer.ReasonShared},
		{"k8s-like: handed on", fakeAttestor{}, "handoff", peer.ReasonNotHolder},
		{"unix: execve keeping the connection", unixattest.New(), "exec", peer.ReasonExecuted},
		{"k8s-like: execve keeping the connection", fakeAttestor{}, "exec", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lis, sock := attesttest.Listen(t)
			h := attesttest.StartCmdHelper(t, other, sock, nil, second)
			creds := NewCredentials(tc.attestor, CredentialsConfig{Timeout: 5 * time.Second, HolderMaxAge: -1})
			conn, auth, err := creds.ServerHandshake(attesttest.Accept(t, lis))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ctx := grpcpeer.NewContext(context.Background(), &grpcpeer.Peer{AuthInfo: auth})
			if _, err := FromContext(ctx); err != nil {
				t.Fatalf("before: %v", err)
			}
			h.Do(tc.command)
			_, err = FromContext(ctx)
			if peer.ReasonOf(err) != tc.reason && !(tc.reason == "" && err == nil) {
				t.Fatalf("after %s: %v; want reason %q", tc.command, err, tc.reason)
			}
		})
	}
}
