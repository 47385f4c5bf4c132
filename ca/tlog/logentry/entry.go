// Package logentry decodes the entries of Castellan's issuance log as any
// reader of the log sees them (C2SP tlog-tiles leaf data, entry format
// version 1, documented in package ca/tlog), and checks that an issuance
// or renewal entry describes the certificate it carries, so that a reader
// matches what certificates say, not only what the log claims. It imports
// nothing of the CA: only the log's public format.
package logentry

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"
)

// Version is the entry format version this package reads (the
// format is documented in package ca/tlog).
const Version = 1

// Entry is a decoded log entry, entry format version 1. Members absent
// from the entry are zero.
type Entry struct {
	Index           uint64
	Kind            string // issuance, renewal, revocation, ca_key_change, join_token_use, ban, unban, ...
	Time            time.Time
	Serial          string
	SPIFFEID        string
	Node            string
	NotBefore       time.Time
	NotAfter        time.Time
	PublicKeySHA256 string
	Reason          string
	Parent          string
	// Cert is the leaf certificate's DER (issuance, renewal and CA key
	// changes).
	Cert []byte
}

// wireEntry is entry format version 1. Members a later version 1 adds
// are ignored; a new version changes "v".
type wireEntry struct {
	V               *int    `json:"v"`
	Index           *uint64 `json:"index"`
	Kind            string  `json:"kind"`
	Time            string  `json:"time"`
	Serial          string  `json:"serial"`
	SPIFFEID        string  `json:"spiffe_id"`
	Node            string  `json:"node"`
	NotBefore       string  `json:"not_before"`
	NotAfter        string  `json:"not_after"`
	PublicKeySHA256 string  `json:"public_key_sha256"`
	Cert            string  `json:"cert"`
	Reason          string  `json:"reason"`
	Parent          string  `json:"parent"`
}

// Decode decodes the leaf data of the entry at index. It refuses an
// entry that is not a version 1 JSON object, that names another index or
// no kind, whose times or certificate do not parse, and an issuance or
// renewal whose members do not describe its own certificate.
func Decode(data []byte, index uint64) (Entry, error) {
	var w wireEntry
	if err := json.Unmarshal(data, &w); err != nil {
		return Entry{}, fmt.Errorf("entry %d is not a JSON object: %w", index, err)
	}
	switch {
	case w.V == nil || *w.V != Version:
		return Entry{}, fmt.Errorf("entry %d has format version %s; this monitor reads version %d (upgrade castellanctl)", index, optional(w.V), Version)
	case w.Index == nil || *w.Index != index:
		return Entry{}, fmt.Errorf("entry at index %d says it is at index %s: entries cannot be moved", index, optional(w.Index))
	case w.Kind == "":
		return Entry{}, fmt.Errorf("entry %d has no kind", index)
	}
	e := Entry{Index: index, Kind: w.Kind, Serial: w.Serial, SPIFFEID: w.SPIFFEID, Node: w.Node,
		PublicKeySHA256: w.PublicKeySHA256, Reason: w.Reason, Parent: w.Parent}
	if err := decodeTimes(&e, &w); err != nil {
		return Entry{}, fmt.Errorf("entry %d: %w", index, err)
	}
	if w.Cert != "" {
		var err error
		if e.Cert, err = base64.StdEncoding.DecodeString(w.Cert); err != nil {
			return Entry{}, fmt.Errorf("entry %d: its certificate is not standard base64: %w", index, err)
		}
	}
	if e.Kind == "issuance" || e.Kind == "renewal" {
		if err := checkCertificate(&e); err != nil {
			return Entry{}, fmt.Errorf("entry %d (%s of %s): %w", index, e.Kind, e.SPIFFEID, err)
		}
	}
	return e, nil
}

func decodeTimes(e *Entry, w *wireEntry) error {
	for _, f := range []struct {
		name string
		dst  *time.Time
		src  string
	}{{"time", &e.Time, w.Time}, {"not_before", &e.NotBefore, w.NotBefore}, {"not_after", &e.NotAfter, w.NotAfter}} {
		if f.src == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, f.src)
		if err != nil {
			return fmt.Errorf("%s %q is not an RFC 3339 time", f.name, f.src)
		}
		*f.dst = t
	}
	if e.Time.IsZero() {
		return fmt.Errorf("no time")
	}
	return nil
}

// checkCertificate checks that a certificate entry's members are its
// certificate's: a monitor must match what the certificate says, not
// what its log entry claims.
func checkCertificate(e *Entry) error {
	if len(e.Cert) == 0 {
		return fmt.Errorf("no certificate")
	}
	c, err := x509.ParseCertificate(e.Cert)
	if err != nil {
		return fmt.Errorf("its certificate does not parse: %w", err)
	}
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	switch {
	case len(c.URIs) != 1 || c.URIs[0].String() != e.SPIFFEID:
		return fmt.Errorf("the certificate's URI SANs are %v, not the entry's SPIFFE ID alone", c.URIs)
	case c.SerialNumber.Text(16) != e.Serial:
		return fmt.Errorf("the certificate's serial is %s, not the entry's %s", c.SerialNumber.Text(16), e.Serial)
	case !c.NotBefore.Equal(e.NotBefore) || !c.NotAfter.Equal(e.NotAfter):
		return fmt.Errorf("the certificate is valid %s to %s, not the entry's %s to %s", c.NotBefore, c.NotAfter, e.NotBefore, e.NotAfter)
	case hex.EncodeToString(sum[:]) != e.PublicKeySHA256:
		return fmt.Errorf("the certificate's public key hash is %x, not the entry's %s", sum, e.PublicKeySHA256)
	}
	return nil
}

func optional[T any](p *T) string {
	if p == nil {
		return "none"
	}
	return fmt.Sprint(*p)
}
