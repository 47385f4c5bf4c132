package sds

import (
	"fmt"
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/castellan-dev/castellan/agent/state"
)

// renderCache holds the secrets rendered from one snapshot, so that a push
// to many streams marshals each key and chain once.
type renderCache struct {
	mu  sync.Mutex
	rev uint64
	m   map[cacheKey]*anypb.Any
}

type cacheKey struct{ name, entryID string }

// resource returns the secret named name for a caller holding ids (the
// caller's identities in snapshot order), or nil if there is none:
//   - "default": the first of ids as a tls_certificate;
//   - a SPIFFE ID of one of ids: that identity as a tls_certificate;
//   - "ROOTCA", the trust domain name or "spiffe://<td>": the bundle as a
//     validation_context.
func (c *renderCache) resource(snap *state.Snapshot, ids []state.Identity, name string) (*anypb.Any, error) {
	var id *state.Identity
	switch {
	case name == DefaultName:
		if len(ids) > 0 {
			id = &ids[0]
		}
	case isBundleName(snap, name):
		return c.get(snap, cacheKey{name: name}, func() (*tlsv3.Secret, error) { return bundleSecret(snap, name) })
	default:
		for i := range ids {
			if ids[i].SVID.ID.String() == name {
				id = &ids[i]
				break
			}
		}
	}
	if id == nil {
		return nil, nil
	}
	return c.get(snap, cacheKey{name: name, entryID: id.EntryID}, func() (*tlsv3.Secret, error) { return certSecret(name, *id) })
}

func (c *renderCache) get(snap *state.Snapshot, k cacheKey, build func() (*tlsv3.Secret, error)) (*anypb.Any, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || c.rev != snap.Revision {
		c.rev, c.m = snap.Revision, map[cacheKey]*anypb.Any{}
	}
	if a, ok := c.m[k]; ok {
		return a, nil
	}
	s, err := build()
	if err != nil {
		return nil, err
	}
	if s == nil {
		c.m[k] = nil
		return nil, nil
	}
	a, err := marshalAny(s)
	if err != nil {
		return nil, err
	}
	c.m[k] = a
	return a, nil
}

// marshalAny packs s deterministically, so equal secrets have equal bytes.
func marshalAny(s *tlsv3.Secret) (*anypb.Any, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("sds: marshal secret %q: %w", s.GetName(), err)
	}
	return &anypb.Any{TypeUrl: SecretTypeURL, Value: b}, nil
}

func isBundleName(snap *state.Snapshot, name string) bool {
	if name == RootCAName {
		return true
	}
	if snap.Bundle == nil {
		return false
	}
	td := snap.Bundle.TrustDomain()
	return name == td.Name() || name == td.IDString()
}

func inline(b []byte) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
}

// certSecret renders an identity as a tls_certificate: the chain (leaf
// first) and the PKCS#8 key, both PEM.
func certSecret(name string, id state.Identity) (*tlsv3.Secret, error) {
	chain, key, err := id.SVID.Marshal()
	if err != nil {
		return nil, fmt.Errorf("sds: encode %s: %w", id.SVID.ID, err)
	}
	return &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		CertificateChain: inline(chain), PrivateKey: inline(key),
	}}}, nil
}

// bundleSecret renders the trust bundle as a validation_context with the
// roots as PEM trusted_ca; nil if the agent has no bundle yet.
func bundleSecret(snap *state.Snapshot, name string) (*tlsv3.Secret, error) {
	if snap.Bundle == nil || snap.Bundle.Empty() {
		return nil, nil
	}
	pemBytes, err := snap.Bundle.Marshal()
	if err != nil {
		return nil, fmt.Errorf("sds: encode bundle: %w", err)
	}
	return &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
		TrustedCa: inline(pemBytes),
	}}}, nil
}
