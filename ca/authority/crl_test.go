package authority

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"reflect"
	"testing"

	"github.com/castellan-dev/castellan/ca/authority/internal/keystore"
	"github.com/castellan-dev/castellan/ca/authority/rotation"
)

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
