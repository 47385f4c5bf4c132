package bundle

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/integration/kubetest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func testBundle(t *testing.T, cn string) *x509bundle.Bundle {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return x509bundle.FromX509Authorities(spiffeid.RequireTrustDomainFromString("cluster.local"), []*x509.Certificate{cert})
}

func pemOf(t *testing.T, b *x509bundle.Bundle) string {
	t.Helper()
	data, err := b.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func TestPublisherKeepsConfigMapsCurrentOnRealAPIServer(t *testing.T) {
	env := kubetest.Start(t)
	env.CreateNamespace("alpha")
	env.CreateNamespace("beta")
	p, err := NewPublisher(env.Client(), Config{Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	b1 := testBundle(t, "root-1")
	if err := p.SetBundle(b1); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	cms := func(ns string) string {
		cm, err := env.Client().CoreV1().ConfigMaps(ns).Get(context.Background(), ConfigMapName, metav1.GetOptions{})
		if err != nil {
			return "missing: " + err.Error()
		}
		return cm.Data[DataKey]
	}
	eventually := func(what, ns, want string) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for cms(ns) != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %s/%s holds %q", what, ns, ConfigMapName, cms(ns))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	for _, ns := range []string{"alpha", "beta", "default", "kube-system"} {
		eventually("initial publication", ns, pemOf(t, b1))
	}
	env.CreateNamespace("gamma")
	eventually("new namespace", "gamma", pemOf(t, b1))

	cm, err := env.Client().CoreV1().ConfigMaps("alpha").Get(ctx, ConfigMapName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm.Data[DataKey] = "tampered"
	if _, err := env.Client().CoreV1().ConfigMaps("alpha").Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually("repair after edit", "alpha", pemOf(t, b1))
	if err := env.Client().CoreV1().ConfigMaps("beta").Delete(ctx, ConfigMapName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually("repair after delete", "beta", pemOf(t, b1))

	b2 := testBundle(t, "root-2")
	if err := p.SetBundle(b2); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{"alpha", "beta", "gamma", "default"} {
		eventually("bundle change", ns, pemOf(t, b2))
	}
}
