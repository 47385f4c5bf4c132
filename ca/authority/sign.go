package authority

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"math/big"
	"net/url"
	"time"

	"github.com/cloudflare/cfssl/config"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/castellan-dev/castellan/ca/lifetime"
	"github.com/castellan-dev/castellan/internal/serial"
)

// Issued is a freshly signed X.509-SVID. Chain holds the leaf first, then the
// intermediate (and, for a plugged-in CA, any further intermediates up to but
// excluding the root). NotBefore and NotAfter are the leaf's validity as
// encoded; PublicKeySHA256 is the SHA-256 of the leaf's SubjectPublicKeyInfo
// DER, which identifies the key without holding it.
type Issued struct {
	ID              spiffeid.ID
	Chain           []*x509.Certificate
	Serial          *big.Int
	NotBefore       time.Time
	NotAfter        time.Time
	PublicKeySHA256 [32]byte
}

// Sign issues an X.509-SVID for id over csr's public key.
//
// A CSR from ParseWorkloadCSR (non-zero csr.ID) is signed with the "workload"
// profile and id must equal csr.ID; one from ParseAgentCSR (zero csr.ID) is
// signed with the "agent" profile. id must be in the CA's trust domain and
// have a path. ttl 0 means the default TTL; a negative ttl or one above
// MaxTTL is rejected (reasons invalid_ttl, ttl_too_long), never shortened.
//
// The leaf has exactly one URI SAN (id), an empty subject (so the SAN
// extension is critical, RFC 5280 4.2.1.6), CA:false, key usage
// digitalSignature (+keyEncipherment for RSA keys), EKU serverAuth and
// clientAuth, a random 128-bit serial and an AuthorityKeyId. NotBefore is
// now minus Backdate (not before the intermediate's NotBefore); NotAfter is
// now plus ttl, clamped to the intermediate's NotAfter. Sign returns
// ErrSignerExpired when the intermediate is no longer valid.
func (a *Authority) Sign(ctx context.Context, csr *CSR, id spiffeid.ID, ttl time.Duration) (*Issued, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("authority: sign: %w", err)
	}
	if csr == nil || csr.PublicKey == nil {
		return nil, reject(ReasonMalformedCSR, "no CSR public key to sign")
	}
	if err := a.checkID(id); err != nil {
		return nil, err
	}
	profileName := ProfileAgent
	if !csr.ID.IsZero() {
		profileName = ProfileWorkload
		if csr.ID != id {
			return nil, reject(ReasonIDMismatch, "CSR names %q but the caller may only obtain %q", csr.ID, id)
		}
	}
	return a.sign(ctx, profileName, csr, id, ttl, ServerNames{})
}

// SignServer issues the CA server's own TLS certificate: an SVID for id
// (signed like an agent SVID, with the "agent" profile) over pub that also
// carries names as DNS and IP SANs, so that clients which verify the server
// by host name (Istio's CA clients: istio-agent, ztunnel) accept it next to
// clients which authorize it by SPIFFE ID. The URI SAN is still the only
// one of its kind, so the certificate remains a valid X.509-SVID.
//
// Only the server calls SignServer, with a key it generated itself; no CSR
// reaches it, so workload and agent issuance (Sign) never carries DNS or IP
// SANs. names must come from ParseServerNames. TTL rules are Sign's.
func (a *Authority) SignServer(ctx context.Context, pub crypto.PublicKey, id spiffeid.ID, ttl time.Duration, names ServerNames) (*Issued, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("authority: sign: %w", err)
	}
	if err := checkPublicKey(pub); err != nil {
		return nil, err
	}
	if err := a.checkID(id); err != nil {
		return nil, err
	}
	if err := names.check(); err != nil {
		return nil, err
	}
	return a.sign(ctx, ProfileAgent, &CSR{PublicKey: pub}, id, ttl, names)
}

// sign signs csr's key for id with profileName; names are SignServer's.
func (a *Authority) sign(ctx context.Context, profileName string, csr *CSR, id spiffeid.ID, ttl time.Duration, names ServerNames) (*Issued, error) {
	ttl, err := a.life.For(ttl, 0, "")
	if err != nil {
		return nil, TTLError(err)
	}

	ca := a.keys() // one snapshot for the whole signing
	tmpl, err := leafTemplate(a.policy, ca, a.clock(), profileName, csr, id, ttl)
	if err != nil {
		return nil, err
	}
	tmpl.DNSNames, tmpl.IPAddresses = names.DNSNames, names.IPAddresses
	der, err := createLeaf(tmpl, ca.cert, csr.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("authority: sign %s: %w", id, err)
	}
	leaf, err := a.parseLeaf(der, tmpl, ca, csr.PublicKey)
	if err != nil {
		return nil, err
	}
	chain := make([]*x509.Certificate, 0, 1+len(ca.chain))
	chain = append(chain, leaf)
	chain = append(chain, ca.chain...)
	a.log.DebugContext(ctx, "signed X.509-SVID", "spiffe_id", id.String(), "profile", profileName,
		"serial", serial.FromBig(leaf.SerialNumber).String(), "not_after", leaf.NotAfter)
	return &Issued{
		ID:              id,
		Chain:           chain,
		Serial:          leaf.SerialNumber,
		NotBefore:       leaf.NotBefore,
		NotAfter:        leaf.NotAfter,
		PublicKeySHA256: sha256.Sum256(leaf.RawSubjectPublicKeyInfo),
	}, nil
}

// parseLeaf returns the leaf der that createLeaf just encoded from tmpl as
// x509.ParseCertificate returns it. The first leaf without DNS or IP SANs
// is parsed: once crypto/x509 has accepted one (its URI SAN's host is the
// trust domain, the same in every leaf), such leaves are built from what
// was encoded instead (leafCertificate), which costs a fraction of a
// parse.
func (a *Authority) parseLeaf(der []byte, tmpl *x509.Certificate, ca *caKeys, pub crypto.PublicKey) (*x509.Certificate, error) {
	plain := len(tmpl.DNSNames)+len(tmpl.IPAddresses) == 0
	if plain && a.leafParses.Load() {
		alg, err := sigAlgFor(ca.key)
		if err != nil {
			return nil, err
		}
		return leafCertificate(der, tmpl, ca.cert, pub, alg)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("authority: parse signed certificate: %w", err)
	}
	if plain {
		a.leafParses.Store(true)
	}
	return leaf, nil
}

// leafTemplate builds the certificate template for Sign from the profile,
// for the current signer.
func (a *Authority) leafTemplate(profileName string, csr *CSR, id spiffeid.ID, ttl time.Duration) (*x509.Certificate, error) {
	return leafTemplate(a.policy, a.keys(), a.clock(), profileName, csr, id, ttl)
}

// leafTemplate builds the certificate template signed by ca at now.
func leafTemplate(policy *config.Signing, ca *caKeys, now time.Time, profileName string, csr *CSR, id spiffeid.ID, ttl time.Duration) (*x509.Certificate, error) {
	profile := policy.Profiles[profileName]
	signer := ca.cert
	if !now.Before(signer.NotAfter) {
		return nil, fmt.Errorf("%w (expired at %s)", ErrSignerExpired, signer.NotAfter.UTC().Format(time.RFC3339))
	}
	notBefore := now.Add(-profile.Backdate)
	if notBefore.Before(signer.NotBefore) {
		notBefore = signer.NotBefore
	}
	notAfter := lifetime.NotAfter(now, ttl, signer.NotAfter)
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	ku, eku := leafKeyUsage(profile, csr.PublicKey)
	return &x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		URIs:                  []*url.URL{id.URL()},
		KeyUsage:              ku,
		ExtKeyUsage:           eku,
		BasicConstraintsValid: true,
		IsCA:                  false,
		AuthorityKeyId:        signer.SubjectKeyId,
	}, nil
}

// serialBytes is the length of a serial number: 128 random bits.
const serialBytes = 16

// newSerial returns a random positive 128-bit serial number.
func newSerial() (*big.Int, error) {
	b := make([]byte, serialBytes)
	for range 4 { // all-zero has probability 2^-128; bounded anyway
		if _, err := rand.Read(b); err != nil {
			return nil, fmt.Errorf("authority: serial number: %w", err)
		}
		if n := new(big.Int).SetBytes(b); n.Sign() > 0 {
			return n, nil
		}
	}
	return nil, fmt.Errorf("authority: serial number: random source returned zeros")
}
