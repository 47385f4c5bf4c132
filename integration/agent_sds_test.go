package integration_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/castellan-dev/castellan/integration/envoysds"
)

const sdsHelperEnv = "CASTELLAN_SDS_HELPER_SOCKET"

// TestSDSHelperProcess is not a test: run from a copied test binary, it is
// the Envoy-like workload of TestAgentServesSDSToEnvoyLikeClient. It NACKs
// the first response, then prints one "SDS <version> <serial> <streams>"
// line per accepted update until stdin closes.
func TestSDSHelperProcess(t *testing.T) {
	sock := os.Getenv(sdsHelperEnv)
	if sock == "" {
		t.Skip("helper process only")
	}
	conn, err := envoysds.Dial(sock)
	if err != nil {
		fmt.Println("SDSERR", err)
		os.Exit(2)
	}
	md, _ := structpb.NewStruct(map[string]any{"NAMESPACE": "it", "SERVICE_ACCOUNT": "sds-test"})
	var calls atomic.Int32
	c, err := envoysds.New(conn, envoysds.Config{
		Node:          &corev3.Node{Id: "sidecar~127.0.0.1~sds-test.it~it.svc.cluster.local", Cluster: "sds-test.it", Metadata: md},
		ResourceNames: []string{"default", "ROOTCA"},
		MinBackoff:    20 * time.Millisecond, MaxBackoff: 500 * time.Millisecond,
		Validate: func(s map[string]*tlsv3.Secret) error {
			if calls.Add(1) == 1 {
				fmt.Println("SDS NACK")
				return errors.New("integration test rejects the first response")
			}
			return nil
		},
	})
	if err != nil {
		fmt.Println("SDSERR", err)
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	go func() { _, _ = bufio.NewReader(os.Stdin).ReadString('\n'); cancel() }()
	go func() { _ = c.Run(ctx) }()
	for {
		select {
		case <-ctx.Done():
			os.Exit(0)
		case u := <-c.Updates():
			cert, pool, err := envoysds.TLS(u.Secrets)
			if err == nil {
				_, err = cert.Leaf.Verify(x509VerifyOptions(cert, pool))
			}
			if err != nil {
				fmt.Println("SDSERR", err)
				continue
			}
			fmt.Printf("SDS %s %x %d %s\n", u.Version, cert.Leaf.SerialNumber, c.Stats().Streams, cert.Leaf.URIs[0])
		}
	}
}

func TestAgentServesSDSToEnvoyLikeClient(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real binaries for about a minute")
	}
	r := newAgentRig(t)
	r.startServer()
	token := strings.Fields(r.ctlRun("token", "create", "--node", "sds-node", "--ttl", "10m"))[0]

	// The workload is a copy of this test binary, identified by its path.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	helper := filepath.Join(t.TempDir(), "envoy-like")
	if err := os.WriteFile(helper, b, 0o755); err != nil {
		t.Fatal(err)
	}
	want := "spiffe://cluster.local/ns/it/sa/sds-test"
	r.ctlRun("entry", "create", "--spiffe-id", want, "--node", "sds-node",
		"--selector", "unix:path:"+helper, "--selector", fmt.Sprintf("unix:uid:%d", os.Getuid()), "--ttl", agentTTL.String())
	r.startAgent(token)
	agentEventually(t, 20*time.Second, "agent socket", func() bool { _, err := os.Stat(r.sock); return err == nil })

	cmd := exec.Command(helper, "-test.run=^TestSDSHelperProcess$")
	cmd.Env = append(os.Environ(), sdsHelperEnv+"="+r.sock)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stdin.Close(); _ = cmd.Process.Kill(); _ = cmd.Wait() })
	lines := make(chan string, 32)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "SDS") {
				lines <- sc.Text()
			}
		}
		close(lines)
	}()
	next := func(what string) []string {
		t.Helper()
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("helper exited waiting for %s\nagent log:\n%s", what, r.agentLog.String())
			}
			if strings.HasPrefix(l, "SDSERR") {
				t.Fatalf("helper: %s", l)
			}
			return strings.Fields(l)
		case <-time.After(45 * time.Second):
			t.Fatalf("no SDS line within 45s waiting for %s\nagent log:\n%s", what, r.agentLog.String())
			return nil
		}
	}

	if f := next("NACK of the first response"); f[1] != "NACK" {
		t.Fatalf("first line %v, want the NACK", f)
	}
	// The NACKed secret is not sent again; the rotation is.
	a := next("the rotation after the NACK")
	if a[4] != want {
		t.Fatalf("default is %s, want %s", a[4], want)
	}
	bb := next("a second rotation")
	if bb[2] == a[2] || bb[1] == a[1] {
		t.Fatalf("second rotation repeated serial or version: %v then %v", a, bb)
	}
	// Restarting the agent ends the stream: the client resubscribes and is
	// answered at once from the agent's cache.
	r.stop(r.agentCmd)
	r.startAgent("")
	c := next("the resubscription after an agent restart")
	if c[3] == bb[3] {
		t.Fatalf("stream count unchanged after restart: %v then %v", bb, c)
	}
}

// x509VerifyOptions verifies a chain from `default` against `ROOTCA`, with
// the chain's intermediates.
func x509VerifyOptions(cert *tls.Certificate, pool *x509.CertPool) x509.VerifyOptions {
	inter := x509.NewCertPool()
	for _, der := range cert.Certificate[1:] {
		if c, err := x509.ParseCertificate(der); err == nil {
			inter.AddCert(c)
		}
	}
	return x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}
}
