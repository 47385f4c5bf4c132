package storm

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// pki is the plug-in CA the storm's castellan-server signs with (a root
// and an intermediate, as an operator's cacerts Secret holds them). The
// storm keeps the intermediate's key so that it can write the agents'
// caches as they were before the outage: SVIDs this CA signed long ago.
type pki struct {
	td     spiffeid.TrustDomain
	root   *x509.Certificate
	inter  *x509.Certificate
	key    crypto.Signer // the intermediate's
	bundle *x509bundle.Bundle
	files  map[string]string // flag name -> file
}

// newPKI writes a P-256 root and intermediate for td into dir.
func newPKI(dir string, td spiffeid.TrustDomain) (*pki, error) {
	p := &pki{td: td, files: map[string]string{}}
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	rootTmpl := p.caTemplate("storm root", 30*24*time.Hour)
	if p.root, err = p.create(rootTmpl, rootTmpl, rootKey.Public(), rootKey); err != nil {
		return nil, err
	}
	interKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	if p.inter, err = p.create(p.caTemplate("storm intermediate", 20*24*time.Hour), p.root, interKey.Public(), rootKey); err != nil {
		return nil, err
	}
	p.key = interKey
	p.bundle = x509bundle.FromX509Authorities(td, []*x509.Certificate{p.root})
	keyDER, err := x509.MarshalPKCS8PrivateKey(interKey)
	if err != nil {
		return nil, err
	}
	for flag, f := range map[string]struct {
		name, typ string
		der       []byte
	}{
		"--root-cert":         {"root.pem", "CERTIFICATE", p.root.Raw},
		"--intermediate-cert": {"intermediate.pem", "CERTIFICATE", p.inter.Raw},
		"--intermediate-key":  {"intermediate.key", "PRIVATE KEY", keyDER},
	} {
		path := filepath.Join(dir, f.name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der}), 0o600); err != nil {
			return nil, fmt.Errorf("storm: write %s: %w", f.name, err)
		}
		p.files[flag] = path
	}
	return p, nil
}

// flags are castellan-server's plug-in CA flags for the files.
func (p *pki) flags() []string {
	var out []string
	for _, f := range []string{"--root-cert", "--intermediate-cert", "--intermediate-key"} {
		out = append(out, f, p.files[f])
	}
	return out
}

func (p *pki) caTemplate(cn string, life time.Duration) *x509.Certificate {
	td := p.td.ID().URL()
	return &x509.Certificate{
		SerialNumber: p.serial(), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-24 * time.Hour), NotAfter: time.Now().Add(life), URIs: []*url.URL{td},
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		IsCA:     true, BasicConstraintsValid: true,
	}
}

func (p *pki) serial() *big.Int {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[0] &= 0x7f
	return new(big.Int).SetBytes(b)
}

func (p *pki) create(tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		return nil, fmt.Errorf("storm: sign %s: %w", tmpl.Subject.CommonName, err)
	}
	return x509.ParseCertificate(der)
}

// oldSVID is an SVID for id with key, signed by the intermediate, valid
// from notBefore for ttl: what the agent received before the outage.
func (p *pki) oldSVID(id spiffeid.ID, key crypto.Signer, notBefore time.Time, ttl time.Duration) (*x509svid.SVID, error) {
	tmpl := &x509.Certificate{
		SerialNumber: p.serial(), NotBefore: notBefore, NotAfter: notBefore.Add(ttl),
		URIs:        []*url.URL{id.URL()},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	leaf, err := p.create(tmpl, p.inter, key.Public(), p.key)
	if err != nil {
		return nil, err
	}
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{leaf, p.inter}, PrivateKey: key}, nil
}
