package authority

import (
	"bytes"
	"context"
	"crypto"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/authority/internal/csrtest"
	"github.com/castellan-dev/castellan/ca/authority/leaf"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

var (
	oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidKeyUsage         = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidSubjectAltName   = asn1.ObjectIdentifier{2, 5, 29, 17}
)

func TestSignIssuesSpecCompliantSVID(t *testing.T) {
	clock := newTestClock()
	a := newTestAuthority(t, clock)
	for _, tt := range []struct {
		name   string
		key    crypto.Signer
		wantKU x509.KeyUsage
	}{
		{"p256", csrtest.ECKey(t, elliptic.P256()), x509.KeyUsageDigitalSignature},
		{"p384", csrtest.ECKey(t, elliptic.P384()), x509.KeyUsageDigitalSignature},
		{"rsa2048", csrtest.RSAKey(t, 2048), x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment},
	} {
		t.Run(tt.name, func(t *testing.T) {
			csr, err := a.ParseWorkloadCSR(csrtest.WorkloadCSR(t, tt.key))
			if err != nil {
				t.Fatal(err)
			}
			iss, err := a.Sign(context.Background(), csr, csr.ID, 0)
			if err != nil {
				t.Fatalf("Sign: %v", err)
			}
			id, chains, err := x509svid.Verify(iss.Chain, a.Bundle(), x509svid.WithTime(clock.now))
			if err != nil {
				t.Fatalf("x509svid.Verify: %v", err)
			}
			if id != csr.ID || iss.ID != csr.ID {
				t.Errorf("verified ID %v, issued ID %v, want %v", id, iss.ID, csr.ID)
			}
			if root := chains[0][len(chains[0])-1]; !root.Equal(a.Root()) {
				t.Errorf("chain ends at %s, want the CA root", root.Subject)
			}
			keyDER, err := x509.MarshalPKCS8PrivateKey(tt.key)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := x509svid.ParseRaw(rawChain(iss.Chain), keyDER); err != nil {
				t.Errorf("x509svid.ParseRaw rejects the SVID: %v", err)
			}
			leaf := iss.Chain[0]
			if len(iss.Chain) != 2 || !iss.Chain[1].Equal(a.Intermediate()) {
				t.Errorf("chain = %d certs, want leaf + intermediate", len(iss.Chain))
			}
			if len(leaf.URIs) != 1 || len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 {
				t.Errorf("SANs: URIs %v DNS %v IP %v email %v", leaf.URIs, leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses)
			}
			if !leaf.BasicConstraintsValid || leaf.IsCA || !csrtest.Critical(t, leaf, oidBasicConstraints) {
				t.Error("basic constraints must be present, critical and CA:false")
			}
			if leaf.KeyUsage != tt.wantKU || !csrtest.Critical(t, leaf, oidKeyUsage) {
				t.Errorf("key usage = %b (critical %v), want %b critical", leaf.KeyUsage, csrtest.Critical(t, leaf, oidKeyUsage), tt.wantKU)
			}
			if len(leaf.RawSubject) > 2 || !csrtest.Critical(t, leaf, oidSubjectAltName) {
				t.Errorf("subject %q must be empty and the SAN extension critical", leaf.Subject)
			}
			if !sameEKU(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) {
				t.Errorf("EKU = %v, want serverAuth+clientAuth", leaf.ExtKeyUsage)
			}
			if !bytes.Equal(leaf.AuthorityKeyId, a.Intermediate().SubjectKeyId) || len(leaf.AuthorityKeyId) == 0 {
				t.Errorf("AuthorityKeyId %x, want intermediate SKID %x", leaf.AuthorityKeyId, a.Intermediate().SubjectKeyId)
			}
			if iss.Serial.Cmp(leaf.SerialNumber) != 0 || iss.Serial.Sign() <= 0 || iss.Serial.BitLen() > 128 {
				t.Errorf("serial %v: want positive, at most 128 bits, equal to the leaf's", iss.Serial)
			}
			if want := clock.now.Add(-backdate); !leaf.NotBefore.Equal(want) || !iss.NotBefore.Equal(want) {
				t.Errorf("NotBefore = %v, want %v", leaf.NotBefore, want)
			}
			if want := clock.now.Add(DefaultTTL); !leaf.NotAfter.Equal(want) || !iss.NotAfter.Equal(want) {
				t.Errorf("NotAfter = %v, want %v (default TTL)", leaf.NotAfter, want)
			}
			if iss.PublicKeySHA256 != sha256.Sum256(leaf.RawSubjectPublicKeyInfo) {
				t.Error("PublicKeySHA256 is not the hash of the leaf SPKI")
			}
			if !csrtest.PublicKeyEqual(leaf.PublicKey, tt.key.Public()) {
				t.Error("leaf public key is not the CSR's")
			}
		})
	}
}

func rawChain(chain []*x509.Certificate) []byte {
	var out []byte
	for _, c := range chain {
		out = append(out, c.Raw...)
	}
	return out
}

func sameEKU(got, want []x509.ExtKeyUsage) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] != want[i] {
			return false
		}
	}
	return true
}

func TestSignHonoursRequestedTTLAndUsesUniqueSerials(t *testing.T) {
	clock := newTestClock()
	a := newTestAuthority(t, clock)
	csr, err := a.ParseWorkloadCSR(csrtest.WorkloadCSR(t, csrtest.ECKey(t, elliptic.P256())))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for i := range 50 {
		iss, err := a.Sign(context.Background(), csr, csr.ID, 24*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if want := clock.now.Add(24 * time.Hour); !iss.NotAfter.Equal(want) {
			t.Fatalf("NotAfter = %v, want %v", iss.NotAfter, want)
		}
		if seen[iss.Serial.String()] {
			t.Fatalf("serial repeated after %d certificates", i)
		}
		seen[iss.Serial.String()] = true
	}
}

func TestSignAgentCSRUsesAttestedID(t *testing.T) {
	clock := newTestClock()
	a := newTestAuthority(t, clock)
	der := csrtest.CSR(t, csrtest.ECKey(t, elliptic.P256()), csrtest.Spec{URIs: []string{"spiffe://example.org/ns/default/sa/admin"}})
	csr, err := a.ParseAgentCSR(der)
	if err != nil {
		t.Fatal(err)
	}
	agentID := spiffeid.RequireFromString("spiffe://example.org/castellan/agent/node-1")
	iss, err := a.Sign(context.Background(), csr, agentID, 0)
	if err != nil {
		t.Fatal(err)
	}
	id, _, err := x509svid.Verify(iss.Chain, a.Bundle(), x509svid.WithTime(clock.now))
	if err != nil || id != agentID {
		t.Fatalf("leaf ID %v (err %v), want the attested %v, not the CSR's SAN", id, err, agentID)
	}
}

func TestSignRejectsBadRequests(t *testing.T) {
	a := newTestAuthority(t, newTestClock())
	csr, err := a.ParseWorkloadCSR(csrtest.WorkloadCSR(t, csrtest.ECKey(t, elliptic.P256())))
	if err != nil {
		t.Fatal(err)
	}
	other := spiffeid.RequireFromString("spiffe://example.org/ns/default/sa/other")
	for _, tt := range []struct {
		name   string
		csr    *leaf.CSR
		id     spiffeid.ID
		ttl    time.Duration
		reason string
		msg    string
	}{
		{"TTL above max", csr, csr.ID, 24*time.Hour + time.Second, ReasonTTLTooLong, "exceeds the maximum 24h0m0s"},
		{"negative TTL", csr, csr.ID, -time.Minute, ReasonInvalidTTL, "negative"},
		{"ID other than the CSR's", csr, other, 0, ReasonIDMismatch, "may only obtain"},
		{"ID in another trust domain", &leaf.CSR{PublicKey: csr.PublicKey}, spiffeid.RequireFromString("spiffe://evil.org/x"), 0, leaf.ReasonWrongTrustDomain, "evil.org"},
		{"trust domain ID", &leaf.CSR{PublicKey: csr.PublicKey}, testTD.ID(), 0, leaf.ReasonEmptyPath, "no path"},
		{"zero ID", &leaf.CSR{PublicKey: csr.PublicKey}, spiffeid.ID{}, 0, leaf.ReasonInvalidSPIFFEID, "empty"},
		{"nil CSR", nil, csr.ID, 0, leaf.ReasonMalformedCSR, "public key"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			iss, err := a.Sign(context.Background(), tt.csr, tt.id, tt.ttl)
			if err == nil {
				t.Fatalf("Sign issued %v", iss.ID)
			}
			csrtest.AssertRejected(t, err, tt.reason, tt.msg)
		})
	}
}

func TestSignStopsOnCanceledContext(t *testing.T) {
	a := newTestAuthority(t, newTestClock())
	csr, err := a.ParseWorkloadCSR(csrtest.WorkloadCSR(t, csrtest.ECKey(t, elliptic.P256())))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := a.Sign(ctx, csr, csr.ID, 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("Sign error = %v, want context.Canceled", err)
	}
}

func TestSignClampsNotAfterToIntermediate(t *testing.T) {
	clock := newTestClock()
	a := newTestAuthority(t, clock)
	inter := a.Intermediate()
	csr, err := a.ParseWorkloadCSR(csrtest.WorkloadCSR(t, csrtest.ECKey(t, elliptic.P256())))
	if err != nil {
		t.Fatal(err)
	}
	clock.now = inter.NotAfter.Add(-10 * time.Minute)
	iss, err := a.Sign(context.Background(), csr, csr.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !iss.NotAfter.Equal(inter.NotAfter) || !iss.Chain[0].NotAfter.Equal(inter.NotAfter) {
		t.Fatalf("NotAfter = %v, want clamped to the intermediate's %v", iss.NotAfter, inter.NotAfter)
	}
	if _, _, err := x509svid.Verify(iss.Chain, a.Bundle(), x509svid.WithTime(clock.now)); err != nil {
		t.Fatalf("clamped leaf does not verify: %v", err)
	}

	clock.now = inter.NotAfter.Add(time.Second)
	if _, err := a.Sign(context.Background(), csr, csr.ID, 0); !errors.Is(err, leaf.ErrSignerExpired) {
		t.Fatalf("Sign after intermediate expiry: %v, want leaf.ErrSignerExpired", err)
	} else if ReasonOf(err) != ReasonInternal {
		t.Errorf("ReasonOf(expired) = %q, want %q: it is not the caller's fault", ReasonOf(err), ReasonInternal)
	}
}

func TestSignNeverBackdatesBeforeIntermediate(t *testing.T) {
	clock := newTestClock()
	a := newTestAuthority(t, clock)
	csr, err := a.ParseWorkloadCSR(csrtest.WorkloadCSR(t, csrtest.ECKey(t, elliptic.P256())))
	if err != nil {
		t.Fatal(err)
	}
	clock.now = a.Intermediate().NotBefore.Add(time.Second)
	iss, err := a.Sign(context.Background(), csr, csr.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if iss.NotBefore.Before(a.Intermediate().NotBefore) {
		t.Fatalf("NotBefore %v precedes the intermediate's %v", iss.NotBefore, a.Intermediate().NotBefore)
	}
}

func TestConfigTTLs(t *testing.T) {
	a, err := New(Config{TrustDomain: testTD, DefaultTTL: 10 * time.Minute, MaxTTL: 2 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if a.MaxTTL() != 2*time.Hour || a.DefaultTTL() != 10*time.Minute {
		t.Errorf("MaxTTL %v DefaultTTL %v", a.MaxTTL(), a.DefaultTTL())
	}
	csr, err := a.ParseWorkloadCSR(csrtest.WorkloadCSR(t, csrtest.ECKey(t, elliptic.P256())))
	if err != nil {
		t.Fatal(err)
	}
	iss, err := a.Sign(context.Background(), csr, csr.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := iss.NotAfter.Sub(iss.NotBefore); got != 10*time.Minute+leaf.Backdate {
		t.Errorf("lifetime = %v, want default TTL + backdate", got)
	}
	if _, err := a.Sign(context.Background(), csr, csr.ID, 3*time.Hour); ReasonOf(err) != ReasonTTLTooLong {
		t.Errorf("3h with max 2h: %v", err)
	}
	for _, bad := range []Config{
		{},
		{TrustDomain: testTD, DefaultTTL: 2 * time.Hour, MaxTTL: time.Hour},
		{TrustDomain: testTD, MaxTTL: -time.Hour},
		{TrustDomain: testTD, IntermediateTTL: time.Hour},
		{TrustDomain: testTD, RootCertFile: "root.pem"},
	} {
		if _, err := New(bad); err == nil {
			t.Errorf("New(%+v) accepted an invalid config", bad)
		}
	}
}

func TestSignIgnoresExtensionsRequestedInCSR(t *testing.T) {
	clock := newTestClock()
	a := newTestAuthority(t, clock)
	caTrue, err := asn1.Marshal(struct {
		IsCA       bool `asn1:"optional"`
		MaxPathLen int  `asn1:"optional,default:-1"`
	}{IsCA: true, MaxPathLen: 3})
	if err != nil {
		t.Fatal(err)
	}
	key := csrtest.ECKey(t, elliptic.P256())
	tmpl := &x509.CertificateRequest{
		URIs: csrtest.WorkloadURIs(t),
		ExtraExtensions: []pkix.Extension{
			{Id: oidBasicConstraints, Critical: true, Value: caTrue},
			{Id: asn1.ObjectIdentifier{1, 2, 3, 4}, Value: []byte{0x05, 0x00}},
		},
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := a.ParseWorkloadCSR(der)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := a.Sign(context.Background(), csr, csr.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	leaf := iss.Chain[0]
	if leaf.IsCA || leaf.KeyUsage&x509.KeyUsageCertSign != 0 {
		t.Fatal("a CSR asking for CA:true produced a CA certificate")
	}
	for _, e := range leaf.Extensions {
		if e.Id.Equal(asn1.ObjectIdentifier{1, 2, 3, 4}) {
			t.Fatal("an extension requested in the CSR was copied into the leaf")
		}
	}
}
