package cluster

import (
	"net"
	"time"

	"github.com/castellan-dev/castellan/internal/kubepki"
)

// pki is the cluster's key material (internal/kubepki): one CA signs every
// serving and client certificate (the apiserver's, the kubelet's and each
// component's client credential), and an RSA key signs service-account
// tokens.
type pki struct {
	dir       string
	caFile    string
	caPEM     []byte
	ca        *kubepki.CA
	saKeyFile string
	saPubFile string
}

// credential is a certificate and its key, as files and as PEM.
type credential struct {
	certFile, keyFile string
	certPEM, keyPEM   []byte
}

// newPKI creates the CA and the service-account key pair in dir.
func newPKI(dir string) (*pki, error) {
	ca, err := kubepki.NewCA(dir, "castellan-cluster-ca", 48*time.Hour)
	if err != nil {
		return nil, err
	}
	sa, err := kubepki.WriteServiceAccountKeys(dir)
	if err != nil {
		return nil, err
	}
	return &pki{dir: dir, caFile: ca.File, caPEM: ca.PEM, ca: ca, saKeyFile: sa.KeyFile, saPubFile: sa.PubFile}, nil
}

// client issues a client certificate for user cn in the given groups.
func (p *pki) client(name, cn string, groups ...string) (*credential, error) {
	return credentialOf(p.ca.Client(name, cn, groups...))
}

// serving issues a serving certificate for the given DNS names and IPs.
func (p *pki) serving(name string, dnsNames []string, ips []net.IP) (*credential, error) {
	return credentialOf(p.ca.Serving(name, name, dnsNames, ips))
}

func credentialOf(c *kubepki.Credential, err error) (*credential, error) {
	if err != nil {
		return nil, err
	}
	return &credential{certFile: c.CertFile, keyFile: c.KeyFile, certPEM: c.CertPEM, keyPEM: c.KeyPEM}, nil
}
