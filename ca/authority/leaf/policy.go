package leaf

import (
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"time"

	"github.com/cloudflare/cfssl/config"
)

// Signing profile names in the cfssl policy.
const (
	// ProfileWorkload signs workload X.509-SVIDs (CSRs from ParseWorkloadCSR).
	ProfileWorkload = "workload"
	// ProfileAgent signs agent SVIDs (CSRs from ParseAgentCSR).
	ProfileAgent = "agent"
)

// Backdate is how far NotBefore is set before the signing time, so that a
// peer whose clock is slightly behind the CA's accepts a fresh certificate.
const Backdate = 30 * time.Second

// leafUsages are the cfssl usages of both leaf profiles: digitalSignature,
// serverAuth and clientAuth. keyEncipherment is added for RSA keys only, at
// signing time, as the X.509-SVID spec asks (see leafKeyUsage).
var leafUsages = []string{"digital signature", "server auth", "client auth"}

// NewPolicy builds the cfssl signing policy: the "workload" and "agent"
// profiles, both with the default TTL as expiry and Backdate as backdate.
// Template reads key usages, expiry and backdate from these profiles.
func NewPolicy(defaultTTL time.Duration) (*config.Signing, error) {
	profile := func() *config.SigningProfile {
		return &config.SigningProfile{
			Usage:          append([]string(nil), leafUsages...),
			Expiry:         defaultTTL,
			ExpiryString:   defaultTTL.String(),
			Backdate:       Backdate,
			BackdateString: Backdate.String(),
		}
	}
	p := &config.Signing{
		Default: profile(),
		Profiles: map[string]*config.SigningProfile{
			ProfileWorkload: profile(),
			ProfileAgent:    profile(),
		},
	}
	if !p.Valid() {
		return nil, fmt.Errorf("authority: cfssl signing policy is invalid")
	}
	for name, sp := range p.Profiles {
		if _, _, unknown := sp.Usages(); len(unknown) > 0 {
			return nil, fmt.Errorf("authority: profile %q has unknown usages %v", name, unknown)
		}
	}
	return p, nil
}

// leafKeyUsage returns the profile's key usages for a leaf over pub, plus
// keyEncipherment when pub is an RSA key.
func leafKeyUsage(p *config.SigningProfile, pub any) (x509.KeyUsage, []x509.ExtKeyUsage) {
	ku, eku, _ := p.Usages()
	if _, ok := pub.(*rsa.PublicKey); ok {
		ku |= x509.KeyUsageKeyEncipherment
	}
	return ku, eku
}
