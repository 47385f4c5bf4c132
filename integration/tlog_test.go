package integration_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/tessera/client"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/grpc/credentials"
)

// tlogAgent joins the server as an agent and returns a client that signs
// SVIDs for appID.
func tlogAgent(t *testing.T, ctx context.Context, s *caServer, node, appID string) cav1.CertificateAuthorityServiceClient {
	t.Helper()
	token := strings.TrimSpace(s.ctlRun(t, "token", "create", "--node", node, "--ttl", "5m"))
	s.ctlRun(t, "entry", "create", "--spiffe-id", appID, "--node", node, "--selector", "unix:uid:1000")
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	trust, err := x509bundle.Load(td, filepath.Join(s.dataDir, "bundle.pem"))
	if err != nil {
		t.Fatal(err)
	}
	serverID := spiffeid.RequireFromPath(td, "/castellan/server")
	anon := caDial(t, s.addr, credentials.NewTLS(tlsconfig.TLSClientConfig(trust, tlsconfig.AuthorizeID(serverID))))
	key, csr := caCSR(t, "")
	att, err := anon.AttestAgent(ctx, &cav1.AttestAgentRequest{
		Attestation: &cav1.AttestAgentRequest_JoinToken{JoinToken: token}, Csr: csr})
	if err != nil {
		t.Fatalf("AttestAgent: %v", err)
	}
	svid := caVerify(t, att.GetSvid(), key, trust, "spiffe://cluster.local/castellan/agent/"+node)
	return caDial(t, s.addr, credentials.NewTLS(tlsconfig.MTLSClientConfig(svid, trust, tlsconfig.AuthorizeID(serverID))))
}

// tlogIssue signs n SVIDs for appID in one batch and returns their leaf
// certificates.
func tlogIssue(t *testing.T, ctx context.Context, agent cav1.CertificateAuthorityServiceClient, appID string, n int) []*x509.Certificate {
	t.Helper()
	req := &cav1.BatchSignX509SVIDRequest{}
	for range n {
		_, csr := caCSR(t, appID)
		req.Requests = append(req.Requests, &cav1.SignX509SVIDRequest{Csr: csr})
	}
	res, err := agent.BatchSignX509SVID(ctx, req)
	if err != nil {
		t.Fatalf("BatchSignX509SVID: %v", err)
	}
	var out []*x509.Certificate
	for i, r := range res.GetResults() {
		if len(r.GetSvid().GetCertChain()) == 0 {
			t.Fatalf("request %d: no SVID: %v", i, r.GetError())
		}
		c, err := x509.ParseCertificate(r.GetSvid().GetCertChain()[0])
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

// tlogCheckpointAtLeast fetches and verifies checkpoints until one covers
// at least size entries: the server signs a grown log at most once a
// second, so this takes at most about a second.
func tlogCheckpointAtLeast(t *testing.T, ctx context.Context, f *client.HTTPFetcher, v note.Verifier, origin string, size uint64) (*log.Checkpoint, []byte) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		cp, raw, _, err := client.FetchCheckpoint(ctx, f.ReadCheckpoint, v, origin)
		if err != nil {
			t.Fatalf("FetchCheckpoint: %v", err)
		}
		if cp.Size >= size {
			return cp, raw
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 5s the checkpoint covers %d entries; want at least %d", cp.Size, size)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// tlogFind reads entry bundles with the tessera client and returns the
// index and leaf data of the entry logging cert. It decodes entries with
// encoding/json alone, as the documented entry format allows.
func tlogFind(t *testing.T, ctx context.Context, f *client.HTTPFetcher, size uint64, cert *x509.Certificate) (uint64, []byte) {
	t.Helper()
	want := base64.StdEncoding.EncodeToString(cert.Raw)
	for n := uint64(0); n*256 < size; n++ {
		b, err := client.GetEntryBundle(ctx, f.ReadEntryBundle, n, size)
		if err != nil {
			t.Fatalf("GetEntryBundle(%d) at size %d: %v", n, size, err)
		}
		for i, data := range b.Entries {
			var e struct {
				V     int    `json:"v"`
				Index uint64 `json:"index"`
				Kind  string `json:"kind"`
				Cert  string `json:"cert"`
			}
			if err := json.Unmarshal(data, &e); err != nil || e.V != 1 || e.Index != n*256+uint64(i) {
				t.Fatalf("entry %d: v=%d index=%d %v", n*256+uint64(i), e.V, e.Index, err)
			}
			if e.Cert == want {
				if e.Kind != "issuance" && e.Kind != "renewal" {
					t.Fatalf("entry %d logs the certificate as %q", e.Index, e.Kind)
				}
				return e.Index, data
			}
		}
	}
	t.Fatalf("certificate %x is not in the first %d entries", cert.SerialNumber, size)
	return 0, nil
}

// The CA's log, fetched over HTTP with only tessera's tlog-tiles client and
// the log's published note key, proves that issued certificates are in it
// and that it only grew.
func TestLogOverHTTPVerifiesWithThirdPartyClient(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real binaries")
	}
	// Hundreds of certificates for one identity: lift the issuance quotas
	// (tested in quota_test.go).
	s := caStart(t, "--quota-identity-per-ttl", "5000", "--quota-node-burst", "5000")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const appID = "spiffe://cluster.local/ns/default/sa/logged"
	agent := tlogAgent(t, ctx, s, "tlog-node", appID)

	// The operator publishes the log key and origin (out of band).
	var pub struct {
		Origin      string `json:"origin"`
		VerifierKey string `json:"verifier_key"`
	}
	if err := json.Unmarshal([]byte(s.ctlRun(t, "ledger", "checkpoint", "-o", "json")), &pub); err != nil {
		t.Fatal(err)
	}
	verifier, err := note.NewVerifier(pub.VerifierKey)
	if err != nil {
		t.Fatal(err)
	}
	root, err := url.Parse("http://" + s.httpAddr + "/log/")
	if err != nil {
		t.Fatal(err)
	}
	f, err := client.NewHTTPFetcher(root, &http.Client{Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}

	first := tlogIssue(t, ctx, agent, appID, 100)
	cp1, raw1 := tlogCheckpointAtLeast(t, ctx, f, verifier, pub.Origin, 100)
	if cp1.Size >= 256 {
		t.Fatalf("first checkpoint size %d; want the 100 issuances in one partial tile", cp1.Size)
	}
	second := tlogIssue(t, ctx, agent, appID, 200)
	cp2, _ := tlogCheckpointAtLeast(t, ctx, f, verifier, pub.Origin, cp1.Size+200)
	t.Logf("checkpoints at sizes %d and %d", cp1.Size, cp2.Size)

	pb, err := client.NewProofBuilder(ctx, cp2.Size, f.ReadTile)
	if err != nil {
		t.Fatal(err)
	}
	for _, cert := range []*x509.Certificate{first[7], second[len(second)-1]} {
		idx, data := tlogFind(t, ctx, f, cp2.Size, cert)
		p, err := pb.InclusionProof(ctx, idx)
		if err != nil {
			t.Fatalf("InclusionProof(%d): %v", idx, err)
		}
		leaf := rfc6962.DefaultHasher.HashLeaf(data)
		if err := proof.VerifyInclusion(rfc6962.DefaultHasher, idx, cp2.Size, leaf, p, cp2.Hash); err != nil {
			t.Fatalf("certificate %x at index %d: %v", cert.SerialNumber, idx, err)
		}
		forged := rfc6962.DefaultHasher.HashLeaf(bytes.Replace(data, []byte(`"issuance"`), []byte(`"renewal"`), 1))
		if proof.VerifyInclusion(rfc6962.DefaultHasher, idx, cp2.Size, forged, p, cp2.Hash) == nil {
			t.Fatalf("an altered entry %d verified", idx)
		}
	}
	cons, err := pb.ConsistencyProof(ctx, cp1.Size, cp2.Size)
	if err != nil {
		t.Fatal(err)
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, cp1.Size, cp2.Size, cons, cp1.Hash, cp2.Hash); err != nil {
		t.Fatalf("consistency %d -> %d: %v", cp1.Size, cp2.Size, err)
	}
	tlogCheckRawHTTP(t, s.httpAddr, raw1, verifier, pub.Origin)
}

// tlogCheckRawHTTP checks what a plain HTTP client sees: the checkpoint
// note, cache headers, and refusals.
func tlogCheckRawHTTP(t *testing.T, addr string, oldRaw []byte, v note.Verifier, origin string) {
	t.Helper()
	if _, _, _, err := log.ParseCheckpoint(oldRaw, origin, v); err != nil {
		t.Fatalf("the first checkpoint no longer parses: %v", err)
	}
	_, otherKey, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		t.Fatal(err)
	}
	other, err := note.NewVerifier(otherKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := log.ParseCheckpoint(oldRaw, origin, other); err == nil {
		t.Fatal("the checkpoint verified with another key of the same name")
	}
	for _, tc := range []struct {
		path  string
		code  int
		cache string
	}{
		{"/log/checkpoint", http.StatusOK, "no-cache"},
		{"/log/tile/0/000", http.StatusOK, "public, max-age=31536000, immutable"},
		{"/log/tile/entries/000", http.StatusOK, "public, max-age=31536000, immutable"},
		{"/log/tile/0/x001/000", http.StatusNotFound, "no-store"},
		{"/log/tile/0/00", http.StatusBadRequest, "no-store"},
		{"/log/nothing", http.StatusNotFound, "no-store"},
	} {
		resp, err := http.Get("http://" + addr + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code || resp.Header.Get("Cache-Control") != tc.cache {
			t.Errorf("GET %s: %d, Cache-Control %q, %q; want %d, %q", tc.path, resp.StatusCode, resp.Header.Get("Cache-Control"), body, tc.code, tc.cache)
		}
		if tc.code != http.StatusOK && !strings.HasPrefix(string(body), "tlog: ") {
			t.Errorf("GET %s: refusal %q does not say what is wrong", tc.path, body)
		}
	}
}
