package authority

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// File names of a generated CA inside Config.DataDir.
const (
	RootCertName         = "root.pem"
	RootKeyName          = "root.key"
	IntermediateCertName = "intermediate.pem"
	IntermediateKeyName  = "intermediate.key"
)

// loadOrGenerate loads the CA in cfg.DataDir, creating it on first start.
// Keys are written before their certificates, so a crash leaves either no
// certificate (regenerated next start) or a complete pair.
func loadOrGenerate(cfg Config) (*caKeys, error) {
	dir := cfg.DataDir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("authority: create data dir: %w", err)
	}
	if fi, err := os.Stat(dir); err == nil && fi.Mode().Perm()&0o077 != 0 {
		cfg.Logger.Warn("CA data dir is readable by others; it should be mode 0700",
			"dir", dir, "mode", fi.Mode().Perm().String())
	}
	root, rootKey, err := loadRoot(dir)
	switch {
	case errors.Is(err, errNoRoot):
		cfg.Logger.Info("generating a new CA root and intermediate", "dir", dir)
		ca, rootKey, err := generateCA(cfg)
		if err != nil {
			return nil, err
		}
		if err := storePair(dir, RootKeyName, RootCertName, ca.root, rootKey); err != nil {
			return nil, err
		}
		return ca, storePair(dir, IntermediateKeyName, IntermediateCertName, ca.cert, ca.key)
	case err != nil:
		return nil, err
	}
	if now := cfg.Clock(); !now.Before(root.NotAfter) {
		return nil, fmt.Errorf("authority: root CA in %s expired at %s; move the data dir aside to start a new CA",
			filepath.Join(dir, RootCertName), root.NotAfter)
	}
	ca, err := loadIntermediate(cfg, root)
	if err == nil {
		return ca, nil
	}
	cfg.Logger.Warn("issuing a new intermediate from the stored root", "reason", err.Error())
	ca, err = withIntermediate(cfg, root, rootKey)
	if err != nil {
		return nil, err
	}
	return ca, storePair(dir, IntermediateKeyName, IntermediateCertName, ca.cert, ca.key)
}

// errNoRoot means the data dir holds no root certificate yet.
var errNoRoot = errors.New("authority: no stored root")

// loadRoot reads root.pem and root.key. It returns errNoRoot only when
// root.pem does not exist; a missing root.key next to an existing root.pem
// is an error, never a reason to generate a new CA.
func loadRoot(dir string) (*x509.Certificate, crypto.Signer, error) {
	certPath, keyPath := filepath.Join(dir, RootCertName), filepath.Join(dir, RootKeyName)
	certs, err := readCerts(certPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, errNoRoot
	}
	if err != nil {
		return nil, nil, fmt.Errorf("authority: read root %s: %w", certPath, err)
	}
	key, err := readKey(keyPath)
	if err != nil {
		return nil, nil, fmt.Errorf("authority: read root key %s (the root certificate exists, so its key must too): %v", keyPath, err)
	}
	root := certs[0]
	if !keyMatches(key, root.PublicKey) {
		return nil, nil, fmt.Errorf("authority: root key %s does not match the certificate in %s", keyPath, certPath)
	}
	if !root.IsCA {
		return nil, nil, fmt.Errorf("authority: %s is not a CA certificate", certPath)
	}
	return root, key, nil
}

// loadIntermediate reads the stored intermediate and checks that it matches
// its key, chains to root and has at least MaxTTL of life left.
func loadIntermediate(cfg Config, root *x509.Certificate) (*caKeys, error) {
	certPath := filepath.Join(cfg.DataDir, IntermediateCertName)
	keyPath := filepath.Join(cfg.DataDir, IntermediateKeyName)
	certs, err := readCerts(certPath)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", certPath, err)
	}
	key, err := readKey(keyPath)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", keyPath, err)
	}
	cert := certs[0]
	if !keyMatches(key, cert.PublicKey) {
		return nil, fmt.Errorf("%s does not match %s", keyPath, certPath)
	}
	if err := cert.CheckSignatureFrom(root); err != nil {
		return nil, fmt.Errorf("%s is not signed by the stored root: %w", certPath, err)
	}
	if left := cert.NotAfter.Sub(cfg.Clock()); left < cfg.MaxTTL {
		return nil, fmt.Errorf("%s has %s left, less than the max SVID TTL %s", certPath, left, cfg.MaxTTL)
	}
	return &caKeys{cert: cert, key: key, chain: []*x509.Certificate{cert}, root: root, roots: []*x509.Certificate{root}}, nil
}

// storePair writes a key then its certificate, each atomically with 0600.
func storePair(dir, keyName, certName string, cert *x509.Certificate, key crypto.Signer) error {
	keyPEM, err := encodeKey(key)
	if err != nil {
		return fmt.Errorf("authority: encode %s: %w", keyName, err)
	}
	if err := writeFileAtomic(filepath.Join(dir, keyName), keyPEM); err != nil {
		return fmt.Errorf("authority: write %s: %w", keyName, err)
	}
	if err := writeFileAtomic(filepath.Join(dir, certName), encodeCert(cert)); err != nil {
		return fmt.Errorf("authority: write %s: %w", certName, err)
	}
	return nil
}

// keyMatches reports whether the public half of priv is pub.
func keyMatches(priv crypto.Signer, pub crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	e, ok := priv.Public().(equaler)
	return ok && e.Equal(pub)
}
