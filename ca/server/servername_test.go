package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
)

// TestServerCertificateVerifiesByHostname checks what Istio's CA clients do:
// verify the CA by host name or IP against the root, while our agents still
// authorize it by SPIFFE ID.
func TestServerCertificateVerifiesByHostname(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.ServerNames = []string{"localhost", "127.0.0.1"} })
	roots := x509.NewCertPool()
	for _, c := range e.bundle().X509Authorities() {
		roots.AddCert(c)
	}
	dial := func(serverName string) (*x509.Certificate, error) {
		conn, err := tls.DialWithDialer(&net.Dialer{}, "tcp", e.addr, &tls.Config{RootCAs: roots, ServerName: serverName, NextProtos: []string{"h2"}})
		if err != nil {
			return nil, err
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0], nil
	}
	leaf, err := dial("localhost")
	if err != nil {
		t.Fatalf("ServerName localhost: %v", err)
	}
	if _, err := dial(""); err != nil { // host from the address, 127.0.0.1
		t.Fatalf("dialing 127.0.0.1: %v", err)
	}
	if _, err := dial("evil.example"); err == nil {
		t.Fatal("ServerName evil.example was accepted")
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://cluster.local/castellan/server" {
		t.Fatalf("server URI SANs = %v, want exactly spiffe://cluster.local/castellan/server", leaf.URIs)
	}
	if leaf.IsCA {
		t.Fatal("server certificate is a CA")
	}
	// An agent still authorizes the server by SPIFFE ID.
	if _, err := e.agentClient(t, "node-a").GetBundle(context.Background(), &cav1.GetBundleRequest{}); err != nil {
		t.Fatalf("agent authorizing the server by SPIFFE ID: %v", err)
	}
}
