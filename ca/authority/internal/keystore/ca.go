package keystore

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"log/slog"
	"time"

	"github.com/castellan-dev/castellan/internal/clock"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/castellan-dev/castellan/ca/authority/leaf"
)

// Config says where a CA's keys are and how a new one is shaped. The
// caller (ca/authority) applies the defaults; every field but the three
// plug-in files is required where it is used.
type Config struct {
	// TrustDomain is the trust domain of the CA certificates.
	TrustDomain spiffeid.TrustDomain
	// DataDir holds a generated CA (RootCertName ... IntermediateKeyName).
	DataDir string
	// RootCertFile, IntermediateCertFile and IntermediateKeyFile are a
	// plugged-in CA (see LoadPluggedIn).
	RootCertFile, IntermediateCertFile, IntermediateKeyFile string
	// MaxTTL is the longest SVID lifetime: an intermediate with less left
	// is re-issued (DataDir) or warned about (plug-in).
	MaxTTL time.Duration
	// RootTTL and IntermediateTTL are the lifetimes of a generated root and
	// intermediate (never past the root).
	RootTTL, IntermediateTTL time.Duration
	// Clock tells the time.
	Clock clock.Clock
	// Logger receives warnings about the material loaded.
	Logger *slog.Logger
}

// CA is one consistent snapshot of a signing authority and the trust
// bundle, replaced whole, never modified. Its private keys are unexported
// and never handed out: it signs leaves and CRLs through its methods, and
// the key store seals them (KEK.Seal).
type CA struct {
	ID    string              // authority ID (journal); "" for a fixed CA
	Gen   uint64              // increases with every change
	Cert  *x509.Certificate   // signing (intermediate) certificate
	Chain []*x509.Certificate // Cert, then further intermediates; no root
	Root  *x509.Certificate   // root the chain verifies to
	Roots []*x509.Certificate // the trust bundle
	// Tainted are the signing certificates of tainted authorities: every
	// leaf they signed must be replaced.
	Tainted []*x509.Certificate

	key     crypto.Signer // Cert's private key
	rootKey crypto.Signer // Root's, when known: generated, imported or opened for a new intermediate
}

// With returns a copy of v holding the keys of keys: the same authority
// described anew (its ID, generation, bundle).
func (v CA) With(keys *CA) *CA {
	v.key, v.rootKey = keys.key, keys.rootKey
	return &v
}

// CreateLeaf encodes and signs the leaf tmpl over pub with the CA's key
// (leaf.Create).
func (c *CA) CreateLeaf(tmpl *x509.Certificate, pub crypto.PublicKey) ([]byte, error) {
	return leaf.Create(tmpl, c.Cert, pub, c.key)
}

// LeafCertificate returns the leaf CreateLeaf encoded in der from tmpl
// over pub as x509.ParseCertificate would (leaf.Certificate).
func (c *CA) LeafCertificate(der []byte, tmpl *x509.Certificate, pub crypto.PublicKey) (*x509.Certificate, error) {
	alg, err := leaf.AlgorithmFor(c.key)
	if err != nil {
		return nil, err
	}
	return leaf.Certificate(der, tmpl, c.Cert, pub, alg)
}

// CreateCRL signs tmpl as a revocation list issued by Cert.
func (c *CA) CreateCRL(tmpl *x509.RevocationList) ([]byte, error) {
	return x509.CreateRevocationList(rand.Reader, tmpl, c.Cert, c.key)
}

// NewIntermediate issues a new intermediate under c's root with its root
// key (a generated or imported CA, or one from KEK.OpenRoot).
func (c *CA) NewIntermediate(cfg Config) (*CA, error) {
	if c.rootKey == nil {
		return nil, errors.New("authority: the root key of this CA is not loaded")
	}
	return withIntermediate(cfg, c.Root, c.rootKey)
}

// keyMatches reports whether the public half of priv is pub.
func keyMatches(priv crypto.Signer, pub crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	e, ok := priv.Public().(equaler)
	return ok && e.Equal(pub)
}
