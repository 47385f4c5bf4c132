package cache

import (
	"crypto"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/castellan-dev/castellan/agent/state"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Record is one cached identity: the registration entry it was issued for,
// the SVID (chain and key) and the time the agent plans to renew it.
type Record struct {
	// EntryID is the registration entry's ID, the record's key.
	EntryID string
	// Selectors the caller must present to receive the SVID.
	Selectors []state.Selector
	// TTL is the lifetime the entry asks for; 0 means the CA's default.
	TTL time.Duration
	// SVID is the certificate chain (leaf first) and its private key.
	SVID *x509svid.SVID
	// NextRotation is when the agent plans to renew the SVID.
	NextRotation time.Time
}

// NotAfter returns the leaf's expiry.
func (r Record) NotAfter() time.Time { return r.SVID.Certificates[0].NotAfter }

// recordVersion is the first byte of every stored record.
const recordVersion = 1

// raw is the stored form of a Record, DER and PKCS#8 throughout.
type raw struct {
	entryID, spiffeID string
	ttl               time.Duration
	selectors         []state.Selector
	chain             [][]byte
	key               []byte
	bundle            [][]byte
	notAfter, nextRot time.Time
}

func encode(r raw) []byte {
	b := []byte{recordVersion}
	str := func(s string) { b = binary.AppendUvarint(b, uint64(len(s))); b = append(b, s...) }
	byt := func(s []byte) { b = binary.AppendUvarint(b, uint64(len(s))); b = append(b, s...) }
	list := func(l [][]byte) {
		b = binary.AppendUvarint(b, uint64(len(l)))
		for _, x := range l {
			byt(x)
		}
	}
	str(r.entryID)
	str(r.spiffeID)
	b = binary.AppendVarint(b, int64(r.ttl))
	b = binary.AppendUvarint(b, uint64(len(r.selectors)))
	for _, s := range r.selectors {
		str(s.Type)
		str(s.Value)
	}
	list(r.chain)
	byt(r.key)
	list(r.bundle)
	b = binary.AppendVarint(b, r.notAfter.UnixNano())
	b = binary.AppendVarint(b, r.nextRot.UnixNano())
	return b
}

// decoder reads the stored form; the first error sticks.
type decoder struct {
	b   []byte
	err error
}

var errTruncated = errors.New("cache: truncated record")

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errTruncated
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = errTruncated
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = errTruncated
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) list() [][]byte {
	n := d.uvarint()
	if n > uint64(len(d.b)) { // each element takes at least one byte
		d.err = errTruncated
		return nil
	}
	l := make([][]byte, 0, n)
	for range n {
		l = append(l, d.bytes())
	}
	return l
}

// decode parses the stored form. The returned slices alias b, which bbolt
// only keeps valid inside the transaction: callers copy what they keep.
func decode(b []byte) (raw, error) {
	if len(b) == 0 || b[0] != recordVersion {
		return raw{}, fmt.Errorf("cache: unknown record version")
	}
	d := &decoder{b: b[1:]}
	var r raw
	r.entryID = string(d.bytes())
	r.spiffeID = string(d.bytes())
	r.ttl = time.Duration(d.varint())
	nsel := d.uvarint()
	if nsel > uint64(len(d.b)) {
		return raw{}, errTruncated
	}
	for range nsel {
		r.selectors = append(r.selectors, state.Selector{Type: string(d.bytes()), Value: string(d.bytes())})
	}
	r.chain = d.list()
	r.key = d.bytes()
	r.bundle = d.list()
	r.notAfter = time.Unix(0, d.varint())
	r.nextRot = time.Unix(0, d.varint())
	if d.err != nil {
		return raw{}, d.err
	}
	if len(d.b) != 0 {
		return raw{}, fmt.Errorf("cache: %d trailing bytes in record", len(d.b))
	}
	return r, nil
}

// parser turns stored records into SVIDs, sharing the parsed form of
// certificates that many records hold (intermediates), so that a thousand
// identities do not hold a thousand copies of the same intermediate.
type parser struct {
	shared map[string]*x509.Certificate
}

func (p *parser) cert(der []byte, share bool) (*x509.Certificate, error) {
	if c, ok := p.shared[string(der)]; ok {
		return c, nil
	}
	c, err := x509.ParseCertificate(slices.Clone(der)) // der aliases bbolt's mmap
	if err != nil {
		return nil, err
	}
	if share {
		p.shared[string(der)] = c
	}
	return c, nil
}

// svid validates a stored record at now: the chain parses, the leaf has not
// expired, carries the record's SPIFFE ID, and the key matches it.
func (p *parser) svid(r raw, now time.Time) (*x509svid.SVID, error) {
	if len(r.chain) == 0 {
		return nil, errors.New("cache: record has no certificates")
	}
	certs := make([]*x509.Certificate, len(r.chain))
	for i, der := range r.chain {
		c, err := p.cert(der, i > 0)
		if err != nil {
			return nil, fmt.Errorf("cache: certificate %d: %w", i, err)
		}
		certs[i] = c
	}
	leaf := certs[0]
	if !now.Before(leaf.NotAfter) {
		return nil, fmt.Errorf("cache: SVID expired at %s", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	id, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return nil, fmt.Errorf("cache: leaf: %w", err)
	}
	if want, err := spiffeid.FromString(r.spiffeID); err != nil || want != id {
		return nil, fmt.Errorf("cache: leaf SPIFFE ID %s does not match record %q", id, r.spiffeID)
	}
	key, err := x509.ParsePKCS8PrivateKey(r.key)
	if err != nil {
		return nil, fmt.Errorf("cache: private key: %w", err)
	}
	signer, err := matchKey(key, leaf)
	if err != nil {
		return nil, err
	}
	return &x509svid.SVID{ID: id, Certificates: certs, PrivateKey: signer}, nil
}

// matchKey returns key as a signer if its public half is the leaf's.
func matchKey(key any, leaf *x509.Certificate) (crypto.Signer, error) {
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("cache: private key of type %T cannot sign", key)
	}
	pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(leaf.PublicKey) {
		return nil, errors.New("cache: private key does not match the leaf certificate")
	}
	return signer, nil
}

// toRaw converts a record to its stored form.
func toRaw(r Record, bundle [][]byte) (raw, error) {
	if r.SVID == nil || len(r.SVID.Certificates) == 0 {
		return raw{}, fmt.Errorf("cache: record %q has no SVID", r.EntryID)
	}
	if _, err := matchKey(r.SVID.PrivateKey, r.SVID.Certificates[0]); err != nil {
		return raw{}, fmt.Errorf("cache: record %q: %w", r.EntryID, err)
	}
	key, err := x509.MarshalPKCS8PrivateKey(r.SVID.PrivateKey)
	if err != nil {
		return raw{}, fmt.Errorf("cache: record %q: private key: %w", r.EntryID, err)
	}
	chain := make([][]byte, len(r.SVID.Certificates))
	for i, c := range r.SVID.Certificates {
		chain[i] = c.Raw
	}
	return raw{
		entryID: r.EntryID, spiffeID: r.SVID.ID.String(), ttl: r.TTL, selectors: r.Selectors,
		chain: chain, key: key, bundle: bundle,
		notAfter: r.NotAfter(), nextRot: r.NextRotation,
	}, nil
}
