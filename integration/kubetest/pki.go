package kubetest

import (
	"net"
	"time"

	"github.com/castellan-dev/castellan/internal/kubepki"
)

// pki is the key material an Env generates for its apiserver.
type pki struct {
	caCertPEM []byte // one CA signs the serving cert and the admin client cert

	servingCertFile, servingKeyFile string
	clientCAFile                    string
	adminCertPEM, adminKeyPEM       []byte
	saKeyFile, saPubFile            string
}

// generatePKI writes a CA, a serving certificate for 127.0.0.1/localhost, an
// admin client certificate (O=system:masters) and an RSA service-account
// signing key pair into dir.
func generatePKI(dir string) (*pki, error) {
	ca, err := kubepki.NewCA(dir, "kubetest-ca", 25*time.Hour)
	if err != nil {
		return nil, err
	}
	serving, err := ca.Serving("serving", "kube-apiserver", []string{
		"localhost", "kubernetes", "kubernetes.default",
		"kubernetes.default.svc", "kubernetes.default.svc.cluster.local",
	}, []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP(serviceClusterIP)})
	if err != nil {
		return nil, err
	}
	admin, err := ca.Client("admin", AdminUser, "system:masters")
	if err != nil {
		return nil, err
	}
	sa, err := kubepki.WriteServiceAccountKeys(dir)
	if err != nil {
		return nil, err
	}
	return &pki{
		caCertPEM:       ca.PEM,
		servingCertFile: serving.CertFile,
		servingKeyFile:  serving.KeyFile,
		clientCAFile:    ca.File,
		adminCertPEM:    admin.CertPEM,
		adminKeyPEM:     admin.KeyPEM,
		saKeyFile:       sa.KeyFile,
		saPubFile:       sa.PubFile,
	}, nil
}
