package client

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

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
	svid, err := parseSVID(p.CertChain, key)
	if err != nil {
		return nil, err
	}
	if p.SpiffeId != "" && svid.ID.String() != p.SpiffeId {
		return nil, fmt.Errorf("client: CA returned a certificate for %s, announced %s", svid.ID, p.SpiffeId)
	}
	return svid, nil
}

// parseSVID is x509svid.ParseRaw of chain and key's PKCS #8 encoding,
// without encoding and decoding the key (most of the cost) for the ECDSA
// keys the agent makes: it parses the chain as ParseRaw does and makes the
// same checks. The key must equal the leaf's, curve included, and a parsed
// leaf's curve is one PKCS #8 can name, so a key ParseRaw could not take
// is refused here too. Other keys take ParseRaw itself.
func parseSVID(chain [][]byte, key crypto.Signer) (*x509svid.SVID, error) {
	ec, ok := key.(*ecdsa.PrivateKey)
	if !ok {
		return parseSVIDRaw(chain, key)
	}
	certs, err := x509.ParseCertificates(bytes.Join(chain, nil))
	if err != nil {
		return nil, fmt.Errorf("client: CA returned an unusable SVID: %w", err)
	}
	id, err := checkSVIDChain(certs)
	if err != nil {
		return nil, fmt.Errorf("client: CA returned an unusable SVID: %w", err)
	}
	if !ec.PublicKey.Equal(certs[0].PublicKey) {
		return nil, errors.New("client: CA returned an unusable SVID: the leaf certificate is not for the key of the request")
	}
	return &x509svid.SVID{ID: id, Certificates: certs, PrivateKey: ec}, nil
}

// parseSVIDRaw hands chain and key to x509svid.ParseRaw.
func parseSVIDRaw(chain [][]byte, key crypto.Signer) (*x509svid.SVID, error) {
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("client: marshal key: %w", err)
	}
	svid, err := x509svid.ParseRaw(bytes.Join(chain, nil), keyDER)
	if err != nil {
		return nil, fmt.Errorf("client: CA returned an unusable SVID: %w", err)
	}
	return svid, nil
}

// checkSVIDChain checks what x509svid.ParseRaw requires of an SVID's
// chain, leaf first, and returns the leaf's SPIFFE ID: exactly one URI SAN
// holding a SPIFFE ID with a path; a leaf that is no CA, may make digital
// signatures and may not sign certificates or CRLs; the rest CAs that may
// sign certificates.
func checkSVIDChain(certs []*x509.Certificate) (spiffeid.ID, error) {
	if len(certs) == 0 {
		return spiffeid.ID{}, errors.New("no certificate in the chain")
	}
	leaf := certs[0]
	id, err := x509svid.IDFromCert(leaf)
	switch {
	case err != nil:
		return spiffeid.ID{}, fmt.Errorf("leaf certificate: %w", err)
	case id.Path() == "":
		return spiffeid.ID{}, fmt.Errorf("leaf certificate is for %s, which has no path", id)
	case leaf.IsCA:
		return spiffeid.ID{}, errors.New("leaf certificate is a CA")
	case leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0:
		return spiffeid.ID{}, errors.New("leaf certificate may not make digital signatures")
	case leaf.KeyUsage&(x509.KeyUsageCertSign|x509.KeyUsageCRLSign) != 0:
		return spiffeid.ID{}, errors.New("leaf certificate may sign certificates or CRLs")
	}
	for _, c := range certs[1:] {
		if !c.IsCA || c.KeyUsage&x509.KeyUsageCertSign == 0 {
			return spiffeid.ID{}, fmt.Errorf("signing certificate %q is not a CA that may sign certificates", c.Subject)
		}
	}
	return id, nil
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
