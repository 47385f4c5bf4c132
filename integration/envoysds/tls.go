package envoysds

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
)

// Certificate turns an SDS secret holding a tls_certificate (inline PEM
// certificate_chain and private_key, as Istio's `default` resource has) into
// a tls.Certificate whose Leaf is parsed.
func Certificate(s *tlsv3.Secret) (*tls.Certificate, error) {
	tc := s.GetTlsCertificate()
	if tc == nil {
		return nil, fmt.Errorf("envoysds: secret %q has no tls_certificate", s.GetName())
	}
	chain, key := tc.GetCertificateChain().GetInlineBytes(), tc.GetPrivateKey().GetInlineBytes()
	if len(chain) == 0 || len(key) == 0 {
		return nil, fmt.Errorf("envoysds: secret %q: certificate_chain and private_key must be inline bytes", s.GetName())
	}
	cert, err := tls.X509KeyPair(chain, key)
	if err != nil {
		return nil, fmt.Errorf("envoysds: secret %q: %w", s.GetName(), err)
	}
	return &cert, nil
}

// CertPool turns an SDS secret holding a validation_context with inline PEM
// trusted_ca (as Istio's `ROOTCA` resource has) into a certificate pool.
func CertPool(s *tlsv3.Secret) (*x509.CertPool, error) {
	vc := s.GetValidationContext()
	if vc == nil {
		return nil, fmt.Errorf("envoysds: secret %q has no validation_context", s.GetName())
	}
	pemBytes := vc.GetTrustedCa().GetInlineBytes()
	if len(pemBytes) == 0 {
		return nil, fmt.Errorf("envoysds: secret %q: trusted_ca must be inline bytes", s.GetName())
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		return nil, fmt.Errorf("envoysds: secret %q: trusted_ca holds no PEM certificate", s.GetName())
	}
	return pool, nil
}

// TLS returns the certificate from the `default` secret and the pool from
// the `ROOTCA` secret of an update.
func TLS(secrets map[string]*tlsv3.Secret) (*tls.Certificate, *x509.CertPool, error) {
	def, root := secrets["default"], secrets["ROOTCA"]
	if def == nil || root == nil {
		return nil, nil, errors.New("envoysds: update lacks the default or ROOTCA secret")
	}
	cert, err := Certificate(def)
	if err != nil {
		return nil, nil, err
	}
	pool, err := CertPool(root)
	if err != nil {
		return nil, nil, err
	}
	return cert, pool, nil
}
