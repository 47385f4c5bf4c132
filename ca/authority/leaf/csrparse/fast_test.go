package csrparse

import (
	"bytes"
	"encoding/asn1"
	"testing"
)

// TestFastCSROIDs checks the fast parser's object identifiers against
// encoding/asn1.
func TestFastCSROIDs(t *testing.T) {
	for _, tt := range []struct {
		der []byte
		oid []int
	}{
		{derECDSAWithSHA256, []int{1, 2, 840, 10045, 4, 3, 2}},
		{derECDSAWithSHA384, []int{1, 2, 840, 10045, 4, 3, 3}},
		{derECPublicKey, []int{1, 2, 840, 10045, 2, 1}},
		{derP256, []int{1, 2, 840, 10045, 3, 1, 7}},
		{derP384, []int{1, 3, 132, 0, 34}},
		{derExtensionRequest, []int{1, 2, 840, 113549, 1, 9, 14}},
		{derSubjectAltName, []int{2, 5, 29, 17}},
	} {
		if want := oidContents(t, tt.oid); !bytes.Equal(tt.der, want) {
			t.Errorf("OID %v: %x, want %x", tt.oid, tt.der, want)
		}
	}
}

// oidContents is the DER contents of oid, as encoding/asn1 encodes it.
func oidContents(t *testing.T, oid []int) []byte {
	t.Helper()
	der, err := asn1.Marshal(asn1.ObjectIdentifier(oid))
	if err != nil {
		t.Fatal(err)
	}
	return der[2:]
}
