package authority

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"math/big"
	"reflect"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/authority/keystore"
	"github.com/castellan-dev/castellan/ca/authority/rotation"
)

// TestSignCRLFollowsTheActiveAuthority signs a CRL, activates another
// authority, and signs again: each list verifies under the authority that
// was active, and the first does not verify under the second.
func TestSignCRLFollowsTheActiveAuthority(t *testing.T) {
	e := newJournalEnv(t)
	a := e.open()
	ctx := context.Background()
	now := e.clock.Now()
	tmpl := func() *x509.RevocationList {
		return &x509.RevocationList{Number: big.NewInt(now.UnixNano()), ThisUpdate: now, NextUpdate: now.Add(time.Hour),
			RevokedCertificateEntries: []x509.RevocationListEntry{{SerialNumber: big.NewInt(0xa2), RevocationTime: now, ReasonCode: 1}}}
	}
	first := a.Intermediate()
	der, err := a.SignCRL(tmpl())
	if err != nil {
		t.Fatal(err)
	}
	list := mustParseCRL(t, der)
	if err := list.CheckSignatureFrom(first); err != nil {
		t.Fatalf("CRL not signed by the active intermediate: %v", err)
	}
	if len(list.RevokedCertificateEntries) != 1 || list.RevokedCertificateEntries[0].SerialNumber.Int64() != 0xa2 {
		t.Fatalf("entries = %+v", list.RevokedCertificateEntries)
	}
	next, err := a.Prepare(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	changed := a.Changed()
	if _, err := a.Activate(ctx, next.ID, true); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	default:
		t.Fatal("Changed did not fire on activation: a CRL handler would keep the old signer's list")
	}
	der, err = a.SignCRL(tmpl())
	if err != nil {
		t.Fatal(err)
	}
	if err := mustParseCRL(t, der).CheckSignatureFrom(next.Chain[0]); err != nil {
		t.Fatalf("CRL after activation not signed by the new intermediate: %v", err)
	}
	if err := mustParseCRL(t, der).CheckSignatureFrom(first); err == nil {
		t.Fatal("CRL after activation verifies under the old intermediate")
	}
	if _, err := a.SignCRL(nil); err == nil {
		t.Fatal("SignCRL(nil) succeeded")
	}
}

func mustParseCRL(t *testing.T, der []byte) *x509.RevocationList {
	t.Helper()
	list, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	return list
}

// TestNoMethodHandsOutAKey: the CA's keys stay in the authority's
// packages; no exported method of Authority (its journal's included), of
// the key store's CA, Current and KEK, or of the journal runner returns a
// signer or a private key, directly or in a struct, slice or map.
func TestNoMethodHandsOutAKey(t *testing.T) {
	for _, typ := range []reflect.Type{reflect.TypeFor[*Authority](), reflect.TypeFor[*keystore.CA](),
		reflect.TypeFor[*keystore.Current](), reflect.TypeFor[*keystore.KEK](), reflect.TypeFor[*rotation.Journal]()} {
		if typ.NumMethod() == 0 {
			t.Fatalf("%s has no methods: the test checks nothing", typ)
		}
		for i := range typ.NumMethod() {
			m := typ.Method(i)
			for j := range m.Type.NumOut() {
				if out := m.Type.Out(j); holdsKey(out, map[reflect.Type]bool{}) {
					t.Errorf("%s.%s returns %s, which holds a private key", typ, m.Name, out)
				}
			}
		}
	}
}

// holdsKey reports whether values of t may hold a private key in an
// exported field.
func holdsKey(t reflect.Type, seen map[reflect.Type]bool) bool {
	if seen[t] {
		return false
	}
	seen[t] = true
	keys := []reflect.Type{reflect.TypeFor[crypto.Signer](), reflect.TypeFor[crypto.Decrypter](),
		reflect.TypeFor[*ecdsa.PrivateKey](), reflect.TypeFor[*rsa.PrivateKey](), reflect.TypeFor[ed25519.PrivateKey]()}
	for _, k := range keys {
		if t == k || (t.Kind() == reflect.Interface && k.Kind() == reflect.Interface && k.Implements(t) && t.NumMethod() > 0) {
			return true
		}
	}
	switch t.Kind() {
	case reflect.Pointer, reflect.Slice, reflect.Array, reflect.Chan:
		return holdsKey(t.Elem(), seen)
	case reflect.Map:
		return holdsKey(t.Key(), seen) || holdsKey(t.Elem(), seen)
	case reflect.Struct:
		for i := range t.NumField() {
			if f := t.Field(i); f.IsExported() && holdsKey(f.Type, seen) {
				return true
			}
		}
	}
	return false
}
