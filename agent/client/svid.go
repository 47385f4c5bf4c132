package client

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/castellan-dev/castellan/agent/chaincheck"
	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

var errNotFound = errors.New("client: not found")

// NewKey returns a fresh ECDSA P-256 key, the default for workloads and the
// agent.
func NewKey() (crypto.Signer, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("client: generate key: %w", err)
	}
	return k, nil
}

func newCSR(id spiffeid.ID) (crypto.Signer, []byte, error) {
	key, err := NewKey()
	if err != nil {
		return nil, nil, err
	}
	csr, err := NewCSR(key, id)
	return key, csr, err
}

// svidFromProto builds an SVID from the CA's answer and the key its CSR
// was made with, refusing a chain whose leaf does not match the key or
// whose SPIFFE ID differs from the one announced.
func svidFromProto(p *cav1.X509SVID, key crypto.Signer) (*x509svid.SVID, error) {
	if p == nil || len(p.CertChain) == 0 {
		return nil, errors.New("client: CA returned no certificate")
	}
	svid, err := chaincheck.Parse(p.CertChain, key)
	if err != nil {
		return nil, fmt.Errorf("client: CA returned an unusable SVID: %w", err)
	}
	if p.SpiffeId != "" && svid.ID.String() != p.SpiffeId {
		return nil, fmt.Errorf("client: CA returned a certificate for %s, announced %s", svid.ID, p.SpiffeId)
	}
	return svid, nil
}

// saveSVID writes chain and key as PEM to path (0600), atomically.
func saveSVID(path string, svid *x509svid.SVID) error {
	certs, key, err := svid.Marshal()
	if err != nil {
		return fmt.Errorf("client: marshal agent SVID: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".agent-*.pem")
	if err != nil {
		return fmt.Errorf("client: save agent SVID: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("client: save agent SVID: %w", err)
	}
	_, err = tmp.Write(append(certs, key...))
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("client: save agent SVID: %w", err)
	}
	return nil
}

// loadSVID reads what saveSVID wrote.
func loadSVID(path string) (*x509svid.SVID, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, errNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("client: read agent SVID: %w", err)
	}
	var certs, key []byte
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			certs = append(certs, pem.EncodeToMemory(b)...)
		} else {
			key = append(key, pem.EncodeToMemory(b)...)
		}
	}
	svid, err := x509svid.Parse(certs, key)
	if err != nil {
		return nil, fmt.Errorf("client: agent SVID in %s: %w", path, err)
	}
	return svid, nil
}

// LoadBundle reads PEM roots for td from path (the --trust-bundle file).
func LoadBundle(td spiffeid.TrustDomain, path string) (*x509bundle.Bundle, error) {
	b, err := x509bundle.Load(td, path)
	if err != nil {
		return nil, fmt.Errorf("client: trust bundle: %w", err)
	}
	return b, nil
}
