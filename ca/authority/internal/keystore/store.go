package keystore

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

// LoadOrGenerate loads the CA in cfg.DataDir, creating it on first start.
// Keys are written before their certificates, so a crash leaves either no
// certificate (regenerated next start) or a complete pair.
func LoadOrGenerate(cfg Config) (*CA, error) {
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
	case errors.Is(err, ErrNoRoot):
		cfg.Logger.Info("generating a new CA root and intermediate", "dir", dir)
		ca, err := Generate(cfg)
		if err != nil {
			return nil, err
		}
		if err := storePair(dir, RootKeyName, RootCertName, ca.Root, ca.rootKey); err != nil {
			return nil, err
		}
		return ca, storePair(dir, IntermediateKeyName, IntermediateCertName, ca.Cert, ca.key)
	case err != nil:
		return nil, err
	}
	if now := cfg.Clock.Now(); !now.Before(root.NotAfter) {
		return nil, fmt.Errorf("authority: root CA in %s expired at %s; move the data dir aside to start a new CA",
			filepath.Join(dir, RootCertName), root.NotAfter)
	}
	ca, err := loadIntermediate(cfg, root, rootKey)
	if err == nil {
		return ca, nil
	}
	cfg.Logger.Warn("issuing a new intermediate from the stored root", "reason", err.Error())
	ca, err = withIntermediate(cfg, root, rootKey)
	if err != nil {
		return nil, err
	}
	return ca, storePair(dir, IntermediateKeyName, IntermediateCertName, ca.Cert, ca.key)
}

// ErrNoRoot means the data dir holds no root certificate yet.
var ErrNoRoot = errors.New("authority: no stored root")

// loadRoot reads root.pem and root.key. It returns ErrNoRoot only when
// root.pem does not exist; a missing root.key next to an existing root.pem
// is an error, never a reason to generate a new CA.
func loadRoot(dir string) (*x509.Certificate, crypto.Signer, error) {
	certPath, keyPath := filepath.Join(dir, RootCertName), filepath.Join(dir, RootKeyName)
	certs, err := readCerts(certPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, ErrNoRoot
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
func loadIntermediate(cfg Config, root *x509.Certificate, rootKey crypto.Signer) (*CA, error) {
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
	if left := cert.NotAfter.Sub(cfg.Clock.Now()); left < cfg.MaxTTL {
		return nil, fmt.Errorf("%s has %s left, less than the max SVID TTL %s", certPath, left, cfg.MaxTTL)
	}
	return &CA{Cert: cert, key: key, Chain: []*x509.Certificate{cert}, Root: root, Roots: []*x509.Certificate{root}, rootKey: rootKey}, nil
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

// Import loads the CA files of cfg.DataDir, as LoadOrGenerate does but
// without writing: an intermediate that does not load, or has less than
// MaxTTL left, is replaced by a new one under the stored root (in memory).
// It returns ErrNoRoot when the data dir holds no root.
func Import(cfg Config) (*CA, error) {
	root, rootKey, err := loadRoot(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	ca, err := loadIntermediate(cfg, root, rootKey)
	if err != nil {
		cfg.Logger.Warn("issuing a new intermediate from the imported root", "reason", err.Error())
		ca, err = withIntermediate(cfg, root, rootKey)
	}
	return ca, err
}
