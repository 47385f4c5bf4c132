package keystore

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"os"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// LoadPluggedIn loads an operator-supplied CA and checks it: every root is a
// CA certificate; the intermediate is a CA that may sign certificates, is
// valid now, chains to one of the roots (through any further intermediates
// in its file) and matches its private key; a SPIFFE URI SAN on it, if any,
// is in the trust domain.
func LoadPluggedIn(cfg Config) (*CA, error) {
	f, err := ReadPluginFiles(cfg)
	if err != nil {
		return nil, err
	}
	return ParsePluggedIn(cfg, f)
}

// PluginFiles is the content of a plug-in CA's three files, read once so
// that what is checked is what is hashed and used.
type PluginFiles struct {
	roots, chain, key []byte
}

// ReadPluginFiles reads the plug-in CA's files.
func ReadPluginFiles(cfg Config) (PluginFiles, error) {
	var f PluginFiles
	var err error
	if f.roots, err = os.ReadFile(cfg.RootCertFile); err != nil {
		return f, fmt.Errorf("authority: root cert file %s: %w", cfg.RootCertFile, err)
	}
	if f.chain, err = os.ReadFile(cfg.IntermediateCertFile); err != nil {
		return f, fmt.Errorf("authority: intermediate cert file %s: %w", cfg.IntermediateCertFile, err)
	}
	if f.key, err = os.ReadFile(cfg.IntermediateKeyFile); err != nil {
		return f, fmt.Errorf("authority: intermediate key file %s: %w", cfg.IntermediateKeyFile, err)
	}
	return f, nil
}

// Hash identifies the files' content.
func (f PluginFiles) Hash() [32]byte {
	h := sha256.New()
	for _, b := range [][]byte{f.roots, f.chain, f.key} {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	return [32]byte(h.Sum(nil))
}

// ParsePluggedIn checks a plug-in CA's files (see LoadPluggedIn).
func ParsePluggedIn(cfg Config, f PluginFiles) (*CA, error) {
	roots, err := parseCerts(f.roots)
	if err != nil {
		return nil, fmt.Errorf("authority: root cert file %s: %w", cfg.RootCertFile, err)
	}
	for i, r := range roots {
		if !r.IsCA {
			return nil, fmt.Errorf("authority: certificate %d in root cert file %s (%s) is not a CA certificate",
				i+1, cfg.RootCertFile, r.Subject)
		}
	}
	chain, err := parseCerts(f.chain)
	if err != nil {
		return nil, fmt.Errorf("authority: intermediate cert file %s: %w", cfg.IntermediateCertFile, err)
	}
	cert := chain[0]
	if err := checkIntermediate(cfg, cert); err != nil {
		return nil, err
	}
	key, err := parseKey(f.key)
	if err != nil {
		return nil, fmt.Errorf("authority: intermediate key file %s: %w", cfg.IntermediateKeyFile, err)
	}
	if err := checkSigningKey(key); err != nil {
		return nil, fmt.Errorf("authority: intermediate key file %s: %w", cfg.IntermediateKeyFile, err)
	}
	if !keyMatches(key, cert.PublicKey) {
		return nil, fmt.Errorf("authority: the private key in %s does not match the certificate in %s",
			cfg.IntermediateKeyFile, cfg.IntermediateCertFile)
	}
	verified, err := cert.Verify(x509.VerifyOptions{
		Roots:         poolOf(roots),
		Intermediates: poolOf(chain[1:]),
		CurrentTime:   cfg.Clock.Now(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return nil, fmt.Errorf("authority: intermediate %q in %s does not chain to a root in %s: %w",
			cert.Subject, cfg.IntermediateCertFile, cfg.RootCertFile, err)
	}
	path := verified[0]
	served := path[:len(path)-1]
	if len(served) == 0 { // the signing certificate is itself a root
		served = path
	}
	if len(cert.SubjectKeyId) == 0 {
		cfg.Logger.Warn("plugged-in intermediate has no SubjectKeyId; SVIDs will carry no AuthorityKeyId",
			"subject", cert.Subject.String())
	}
	if left := cert.NotAfter.Sub(cfg.Clock.Now()); left < cfg.MaxTTL {
		cfg.Logger.Warn("plugged-in intermediate expires before the max SVID TTL; SVIDs will be shortened to its expiry",
			"not_after", cert.NotAfter, "max_ttl", cfg.MaxTTL.String())
	}
	return &CA{Cert: cert, key: key, Chain: served, Root: path[len(path)-1], Roots: roots}, nil
}

// checkIntermediate checks the signing certificate on its own.
func checkIntermediate(cfg Config, cert *x509.Certificate) error {
	switch {
	case !cert.BasicConstraintsValid || !cert.IsCA:
		return fmt.Errorf("authority: first certificate in %s (%s) is not a CA certificate (basic constraints CA:true required)",
			cfg.IntermediateCertFile, cert.Subject)
	case cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0:
		return fmt.Errorf("authority: intermediate in %s lacks the keyCertSign key usage", cfg.IntermediateCertFile)
	}
	for _, u := range cert.URIs {
		if u.Scheme != "spiffe" {
			continue
		}
		td, err := spiffeid.TrustDomainFromURI(u)
		if err != nil || td != cfg.TrustDomain {
			return fmt.Errorf("authority: intermediate in %s has URI SAN %q; expected trust domain %q",
				cfg.IntermediateCertFile, u.String(), cfg.TrustDomain)
		}
	}
	return nil
}

func poolOf(certs []*x509.Certificate) *x509.CertPool {
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool
}
