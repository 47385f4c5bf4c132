package authority

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"log/slog"
	"math/big"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/castellan-dev/castellan/ca/authority/internal/keystore"
	"github.com/castellan-dev/castellan/ca/authority/leaf"
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
func (a *Authority) Sign(ctx context.Context, csr *leaf.CSR, id spiffeid.ID, ttl time.Duration) (*Issued, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("authority: sign: %w", err)
	}
	if csr == nil || csr.PublicKey == nil {
		return nil, reject(leaf.ReasonMalformedCSR, "no CSR public key to sign")
	}
	if err := leaf.CheckID(a.td, id); err != nil {
		return nil, err
	}
	profileName := leaf.ProfileAgent
	if !csr.ID.IsZero() {
		profileName = leaf.ProfileWorkload
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
	if err := leaf.CheckPublicKey(pub); err != nil {
		return nil, err
	}
	if err := leaf.CheckID(a.td, id); err != nil {
		return nil, err
	}
	if err := names.check(); err != nil {
		return nil, err
	}
	return a.sign(ctx, leaf.ProfileAgent, &leaf.CSR{PublicKey: pub}, id, ttl, names)
}

// sign signs csr's key for id with profileName; names are SignServer's.
func (a *Authority) sign(ctx context.Context, profileName string, csr *leaf.CSR, id spiffeid.ID, ttl time.Duration, names ServerNames) (*Issued, error) {
	ttl, err := a.life.For(ttl, 0, "")
	if err != nil {
		return nil, TTLError(err)
	}

	ca := a.keys() // one snapshot for the whole signing
	tmpl, err := leaf.Template(a.policy, ca.Cert, a.clock.Now(), profileName, csr, id, ttl)
	if err != nil {
		return nil, err
	}
	tmpl.DNSNames, tmpl.IPAddresses = names.DNSNames, names.IPAddresses
	der, err := ca.CreateLeaf(&tmpl, csr.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("authority: sign %s: %w", id, err)
	}
	cert, err := a.parseLeaf(der, &tmpl, ca, csr.PublicKey)
	if err != nil {
		return nil, err
	}
	chain := make([]*x509.Certificate, 0, 1+len(ca.Chain))
	chain = append(chain, cert)
	chain = append(chain, ca.Chain...)
	if a.log.Enabled(ctx, slog.LevelDebug) { // the arguments cost six allocations
		a.log.DebugContext(ctx, "signed X.509-SVID", "spiffe_id", id.String(), "profile", profileName,
			"serial", serial.FromBig(cert.SerialNumber).String(), "not_after", cert.NotAfter)
	}
	return &Issued{
		ID:              id,
		Chain:           chain,
		Serial:          cert.SerialNumber,
		NotBefore:       cert.NotBefore,
		NotAfter:        cert.NotAfter,
		PublicKeySHA256: sha256.Sum256(cert.RawSubjectPublicKeyInfo),
	}, nil
}

// parseLeaf returns the leaf der that leaf.Create just encoded from tmpl as
// x509.ParseCertificate returns it. The first leaf without DNS or IP SANs
// is parsed: once crypto/x509 has accepted one (its URI SAN's host is the
// trust domain, the same in every leaf), such leaves are built from what
// was encoded instead (leaf.Certificate), which costs a fraction of a
// parse.
func (a *Authority) parseLeaf(der []byte, tmpl *x509.Certificate, ca *keystore.CA, pub crypto.PublicKey) (*x509.Certificate, error) {
	plain := len(tmpl.DNSNames)+len(tmpl.IPAddresses) == 0
	if plain && a.leafParses.Load() {
		return ca.LeafCertificate(der, tmpl, pub)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("authority: parse signed certificate: %w", err)
	}
	if plain {
		a.leafParses.Store(true)
	}
	return cert, nil
}
