package chaincheck

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Parse is x509svid.ParseRaw of chain and key's PKCS #8 encoding,
// without encoding and decoding the key (most of the cost) for the ECDSA
// keys the agent makes: it parses the chain as ParseRaw does and makes the
// same checks. The key must equal the leaf's, curve included, and a parsed
// leaf's curve is one PKCS #8 can name, so a key ParseRaw could not take
// is refused here too. Other keys take ParseRaw itself.
func Parse(chain [][]byte, key crypto.Signer) (*x509svid.SVID, error) {
	ec, ok := key.(*ecdsa.PrivateKey)
	if !ok {
		return parseRaw(chain, key)
	}
	certs, err := x509.ParseCertificates(bytes.Join(chain, nil))
	if err != nil {
		return nil, fmt.Errorf("chaincheck: %w", err)
	}
	id, err := checkChain(certs)
	if err != nil {
		return nil, fmt.Errorf("chaincheck: %w", err)
	}
	if !ec.PublicKey.Equal(certs[0].PublicKey) {
		return nil, errors.New("chaincheck: the leaf certificate is not for the key of the request")
	}
	return &x509svid.SVID{ID: id, Certificates: certs, PrivateKey: ec}, nil
}

// parseRaw hands chain and key to x509svid.ParseRaw.
func parseRaw(chain [][]byte, key crypto.Signer) (*x509svid.SVID, error) {
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("chaincheck: marshal key: %w", err)
	}
	return x509svid.ParseRaw(bytes.Join(chain, nil), keyDER)
}

// checkChain checks what x509svid.ParseRaw requires of an SVID's
// chain, leaf first, and returns the leaf's SPIFFE ID: exactly one URI SAN
// holding a SPIFFE ID with a path; a leaf that is no CA, may make digital
// signatures and may not sign certificates or CRLs; the rest CAs that may
// sign certificates.
func checkChain(certs []*x509.Certificate) (spiffeid.ID, error) {
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
