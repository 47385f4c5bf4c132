package istio_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/castellan-dev/castellan/ca/istio"
)

// csrTotal reads castellan_csr_total{result,reason} from the server; an
// empty result sums every series.
func (e *caEnv) csrTotal(t *testing.T, result, reason string) float64 {
	t.Helper()
	mfs, err := e.metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != "castellan_csr_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if result == "" || labels["result"] == result && labels["reason"] == reason {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// TestCreateCertificateOutcomesAreCountedOnce: every Istio request is
// counted once in castellan_csr_total, with the reason of its refusal,
// whether it was refused before issuance (authentication, a bad PEM) or by
// the issue path (authorization), and an issuance once.
func TestCreateCertificateOutcomesAreCountedOnce(t *testing.T) {
	ca := newCA(t, istio.Config{})
	const id = "spiffe://cluster.local/ns/default/sa/default"
	csr, _ := csrPEM(t, id)
	ctx := context.Background()

	_, err := ca.client(t, nil).CreateCertificate(ctx, request(csr, time.Hour, ""))
	wantCode(t, err, codes.Unauthenticated)
	if !strings.HasPrefix(status.Convert(err).Message(), "authn: no credentials") {
		t.Errorf("message %q", status.Convert(err).Message())
	}

	ca.entry(t, id, "node-a", 2*time.Hour)
	svid := ca.sign(t, id, "node-a")
	c := ca.client(t, svid)
	_, err = c.CreateCertificate(ctx, request("not PEM", 0, ""))
	wantCode(t, err, codes.InvalidArgument)
	other, _ := csrPEM(t, "spiffe://cluster.local/ns/default/sa/other")
	_, err = c.CreateCertificate(ctx, request(other, 0, ""))
	wantCode(t, err, codes.PermissionDenied)
	ca.renew(t, svid, 0)

	for _, tc := range []struct {
		result, reason string
		want           float64
	}{
		{"refused", istio.ReasonNoCredentials, 1},
		{"refused", "malformed_csr", 1},
		{"refused", istio.ReasonIdentityMismatch, 1},
		{"issued", "ok", 1},
	} {
		if got := ca.csrTotal(t, tc.result, tc.reason); got != tc.want {
			t.Errorf("castellan_csr_total{result=%s,reason=%s} = %v, want %v", tc.result, tc.reason, got, tc.want)
		}
	}
	if n := ca.csrTotal(t, "", ""); n != 4 {
		t.Errorf("castellan_csr_total sums to %v over all labels, want 4: one per request", n)
	}
}
