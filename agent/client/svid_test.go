package client

import (
	"strings"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/agent/client/catest"
	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// TestSVIDFromProtoRefusals: an answer without a chain, a chain that is
// not for the request's key, and a certificate for another SPIFFE ID than
// the one announced are refused, saying which.
func TestSVIDFromProtoRefusals(t *testing.T) {
	ca := catest.New(t, td)
	id := spiffeid.RequireFromPath(td, "/ns/default/sa/w")
	s := ca.Issue(t, id, time.Hour)
	chain := [][]byte{s.Certificates[0].Raw, s.Certificates[1].Raw}
	other, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	if got, err := svidFromProto(&cav1.X509SVID{CertChain: chain, SpiffeId: id.String()}, s.PrivateKey); err != nil || got.ID != id {
		t.Fatalf("good answer: %v, %v", got, err)
	}
	for _, tc := range []struct {
		name string
		p    *cav1.X509SVID
		want string
	}{
		{"no answer", nil, "client: CA returned no certificate"},
		{"no chain", &cav1.X509SVID{SpiffeId: id.String()}, "client: CA returned no certificate"},
		{"another key", &cav1.X509SVID{CertChain: chain}, "client: CA returned an unusable SVID: chaincheck: the leaf certificate is not for the key of the request"},
		{"another SPIFFE ID announced", &cav1.X509SVID{CertChain: chain, SpiffeId: "spiffe://cluster.local/ns/default/sa/x"}, "client: CA returned a certificate for spiffe://cluster.local/ns/default/sa/w, announced spiffe://cluster.local/ns/default/sa/x"},
		{"garbage", &cav1.X509SVID{CertChain: [][]byte{[]byte("garbage")}}, "client: CA returned an unusable SVID: chaincheck: x509: malformed certificate"},
	} {
		key := s.PrivateKey
		if tc.name == "another key" {
			key = other
		}
		if _, err := svidFromProto(tc.p, key); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}
