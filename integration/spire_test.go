package integration_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// SPIRE's own agent CLI, built by integration/spire/tool/build.sh (a module
// of its own, so SPIRE stays out of Castellan's go.mod).
const (
	envSpireAgent        = "CASTELLAN_SPIRE_AGENT"
	envRequireSpireAgent = "CASTELLAN_REQUIRE_SPIRE"
)

// spireAgentBinary returns the spire-agent binary: $CASTELLAN_SPIRE_AGENT,
// else ${CASTELLAN_CACHE:-$HOME/.cache/castellan}/bin/spire-agent. When it is
// missing the test is skipped, unless CASTELLAN_REQUIRE_SPIRE=1 (make test).
func spireAgentBinary(t *testing.T) string {
	t.Helper()
	path := os.Getenv(envSpireAgent)
	if path == "" {
		cache := os.Getenv("CASTELLAN_CACHE")
		if cache == "" {
			if home, err := os.UserHomeDir(); err == nil {
				cache = filepath.Join(home, ".cache", "castellan")
			}
		}
		if cache != "" {
			path = filepath.Join(cache, "bin", "spire-agent")
		}
	}
	err := errors.New("no path: " + envSpireAgent + " is unset and there is no home directory")
	if path != "" {
		var fi os.FileInfo
		if fi, err = os.Stat(path); err == nil && (fi.IsDir() || fi.Mode()&0o111 == 0) {
			err = fmt.Errorf("%s is not an executable file", path)
		}
	}
	if err != nil {
		msg := fmt.Sprintf("spire-agent binary not found (%v); build it with integration/spire/tool/build.sh and set %s to the path it prints",
			err, envSpireAgent)
		if os.Getenv(envRequireSpireAgent) == "1" {
			t.Fatalf("%s; %s=1 forbids skipping", msg, envRequireSpireAgent)
		}
		t.Skipf("%s; skipping (set %s=1 to fail instead)", msg, envRequireSpireAgent)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		t.Fatal(err)
	}
	// The agent's unix attestor sees the target of /proc/PID/exe.
	if abs, err = filepath.EvalSymlinks(abs); err != nil {
		t.Fatal(err)
	}
	return abs
}

// spireFetch runs "spire-agent api fetch x509 -socketPath sock args...",
// retrying until it exits 0 (the agent may still be fetching the SVID from
// the CA), and returns its stdout.
func spireFetch(t *testing.T, r *agentRig, bin string, args ...string) []byte {
	t.Helper()
	args = append([]string{"api", "fetch", "x509", "-socketPath", r.sock, "-timeout", "10s"}, args...)
	var stdout, stderr bytes.Buffer
	var err error
	deadline := time.Now().Add(30 * time.Second)
	for {
		stdout.Reset()
		stderr.Reset()
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err = cmd.Run()
		cancel()
		if err == nil {
			return stdout.Bytes()
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("spire-agent %s: %v\nstdout:\n%s\nstderr:\n%s\nagent log:\n%s",
		strings.Join(args, " "), err, stdout.String(), stderr.String(), r.agentLog.String())
	return nil
}

// spireVerify checks that chain is an X.509-SVID for want that verifies
// against the trust bundle roots with go-spiffe.
func spireVerify(t *testing.T, what string, chain, roots []*x509.Certificate, want spiffeid.ID) {
	t.Helper()
	if len(chain) == 0 || len(roots) == 0 {
		t.Fatalf("%s: %d SVID certificates and %d bundle certificates, want at least one of each", what, len(chain), len(roots))
	}
	id, _, err := x509svid.Verify(chain, x509bundle.FromX509Authorities(want.TrustDomain(), roots))
	if err != nil {
		t.Fatalf("%s: x509svid.Verify: %v", what, err)
	}
	if id != want {
		t.Fatalf("%s: verified SVID is %s, want %s", what, id, want)
	}
}

func spireReadPEM(t *testing.T, path string) []*x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			t.Fatalf("%s: PEM block %q, want CERTIFICATE", path, block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		certs = append(certs, c)
	}
	if len(bytes.TrimSpace(data)) != 0 {
		t.Fatalf("%s: trailing data after the PEM blocks", path)
	}
	return certs
}

// TestSpireAgentCLIFetchX509 points SPIRE's own CLI, "spire-agent api fetch
// x509", at the real castellan-agent's Workload API socket: the CLI (a
// client we did not write) is attested by the path of its executable, gets
// our SVID, and what it writes and prints verifies with go-spiffe.
func TestSpireAgentCLIFetchX509(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real binaries and SPIRE's agent CLI")
	}
	spire := spireAgentBinary(t)
	r := newAgentRig(t)
	r.startServer()
	token := strings.Fields(r.ctlRun("token", "create", "--node", "spire-node", "--ttl", "10m"))[0]
	want := spiffeid.RequireFromString("spiffe://cluster.local/ns/interop/sa/spire-agent-cli")
	// Only the spire-agent executable run by our uid gets this identity.
	r.ctlRun("entry", "create", "--spiffe-id", want.String(), "--node", "spire-node",
		"--selector", fmt.Sprintf("unix:uid:%d", os.Getuid()), "--selector", "unix:path:"+spire)
	r.startAgent(token)
	agentEventually(t, 20*time.Second, "agent socket", func() bool { _, err := os.Stat(r.sock); return err == nil })

	t.Run("pretty-write", func(t *testing.T) {
		dir := t.TempDir()
		out := string(spireFetch(t, r, spire, "-write", dir))
		if !strings.Contains(out, "SPIFFE ID:\t\t"+want.String()+"\n") {
			t.Fatalf("spire-agent output does not name %s:\n%s", want, out)
		}
		chain := spireReadPEM(t, filepath.Join(dir, "svid.0.pem"))
		roots := spireReadPEM(t, filepath.Join(dir, "bundle.0.pem"))
		spireVerify(t, "written svid.0.pem", chain, roots, want)
		if _, err := os.Stat(filepath.Join(dir, "svid.0.key")); err != nil {
			t.Fatalf("spire-agent wrote no key: %v", err)
		}
		if _, err := os.Stat(filepath.Join(dir, "svid.1.pem")); err == nil {
			t.Fatal("spire-agent received more than one SVID")
		}
	})

	t.Run("json", func(t *testing.T) {
		out := spireFetch(t, r, spire, "-output", "json")
		// protojson of the Workload API's X509SVIDResponse with proto field
		// names; bytes fields are base64, which encoding/json decodes.
		var resp struct {
			SVIDs []struct {
				SPIFFEID string `json:"spiffe_id"`
				X509SVID []byte `json:"x509_svid"`
				Key      []byte `json:"x509_svid_key"`
				Bundle   []byte `json:"bundle"`
			} `json:"svids"`
		}
		if err := json.Unmarshal(out, &resp); err != nil {
			t.Fatalf("parse spire-agent -output json: %v\n%s", err, out)
		}
		if len(resp.SVIDs) != 1 {
			t.Fatalf("spire-agent -output json: %d SVIDs, want 1:\n%s", len(resp.SVIDs), out)
		}
		s := resp.SVIDs[0]
		if s.SPIFFEID != want.String() {
			t.Fatalf("spire-agent -output json: spiffe_id %q, want %q", s.SPIFFEID, want)
		}
		chain, err := x509.ParseCertificates(s.X509SVID)
		if err != nil {
			t.Fatalf("x509_svid: %v", err)
		}
		roots, err := x509.ParseCertificates(s.Bundle)
		if err != nil {
			t.Fatalf("bundle: %v", err)
		}
		spireVerify(t, "json x509_svid", chain, roots, want)
		if _, err := x509svid.ParseRaw(s.X509SVID, s.Key); err != nil {
			t.Fatalf("x509_svid_key does not match x509_svid: %v", err)
		}
	})
}
