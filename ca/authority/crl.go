package authority

import (
	"crypto/x509"
	"errors"
	"fmt"
)

// SignCRL signs tmpl as a certificate revocation list of the authority that
// signs now, with that authority's key: the key never leaves the
// Authority. tmpl's Number, ThisUpdate, NextUpdate and revoked entries are
// used as given; the issuer and its key come from one snapshot, so a CRL
// is never signed by one authority's key in another's name. Call Changed
// to learn when the signing authority changes (and a CRL should be signed
// again).
func (a *Authority) SignCRL(tmpl *x509.RevocationList) ([]byte, error) {
	if tmpl == nil {
		return nil, errors.New("authority: SignCRL needs a template")
	}
	ca := a.keys()
	der, err := ca.CreateCRL(tmpl)
	if err != nil {
		return nil, fmt.Errorf("authority: sign CRL as %s: %w", ca.Cert.Subject, err)
	}
	return der, nil
}
