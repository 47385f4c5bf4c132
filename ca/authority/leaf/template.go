package leaf

import (
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"math/big"
	"net/url"
	"time"

	"github.com/cloudflare/cfssl/config"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/castellan-dev/castellan/ca/lifetime"
)

// Template builds the template of a leaf signed by issuer at now under
// policy's profile profileName: a random 128-bit serial, NotBefore now
// minus the profile's backdate (not before issuer's NotBefore), NotAfter
// now plus ttl clamped to issuer's NotAfter, id as the only URI SAN, the
// profile's usages (keyEncipherment added for an RSA key), CA:false and
// issuer's SubjectKeyId as AuthorityKeyId. It returns ErrSignerExpired when
// issuer is no longer valid at now.
//
// The template is returned by value: a caller that only hands its address
// to Create and Certificate (which keep no reference to it) keeps it off
// the heap.
func Template(policy *config.Signing, issuer *x509.Certificate, now time.Time, profileName string, csr *CSR, id spiffeid.ID, ttl time.Duration) (x509.Certificate, error) {
	profile := policy.Profiles[profileName]
	if !now.Before(issuer.NotAfter) {
		return x509.Certificate{}, fmt.Errorf("%w (expired at %s)", ErrSignerExpired, issuer.NotAfter.UTC().Format(time.RFC3339))
	}
	notBefore := now.Add(-profile.Backdate)
	if notBefore.Before(issuer.NotBefore) {
		notBefore = issuer.NotBefore
	}
	notAfter := lifetime.NotAfter(now, ttl, issuer.NotAfter)
	serial, err := NewSerial()
	if err != nil {
		return x509.Certificate{}, err
	}
	ku, eku := leafKeyUsage(profile, csr.PublicKey)
	return x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		URIs:                  []*url.URL{id.URL()},
		KeyUsage:              ku,
		ExtKeyUsage:           eku,
		BasicConstraintsValid: true,
		IsCA:                  false,
		AuthorityKeyId:        issuer.SubjectKeyId,
	}, nil
}

// serialBytes is the length of a serial number: 128 random bits.
const serialBytes = 16

// NewSerial returns a random positive 128-bit serial number.
func NewSerial() (*big.Int, error) {
	b := make([]byte, serialBytes)
	for range 4 { // all-zero has probability 2^-128; bounded anyway
		if _, err := rand.Read(b); err != nil {
			return nil, fmt.Errorf("authority: serial number: %w", err)
		}
		if n := new(big.Int).SetBytes(b); n.Sign() > 0 {
			return n, nil
		}
	}
	return nil, fmt.Errorf("authority: serial number: random source returned zeros")
}
