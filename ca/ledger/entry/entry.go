// Package entry defines what the ledger records: events (issuance,
// renewal, revocation, CA key change, join-token use, ban, unban), the
// entries they become at a position of the log, their leaf encoding
// (versioned JSON with a fixed field order, whose RFC 6962 leaf hash is in
// the Merkle tree), the serial form the ledger stores, and the errors
// every part of the ledger returns.
package entry

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"time"
)

// Kind is the type of an audit-log event.
type Kind string

// The kinds of event the ledger records.
const (
	KindIssuance     Kind = "issuance"       // a new X.509-SVID was signed
	KindRenewal      Kind = "renewal"        // an SVID was re-signed for an identity that held one
	KindRevocation   Kind = "revocation"     // a certificate was revoked (Serial, Reason)
	KindCAKeyChange  Kind = "ca_key_change"  // the CA's signing key or chain changed
	KindJoinTokenUse Kind = "join_token_use" // an agent attested with a join token (Node)
	KindBan          Kind = "ban"            // a node was banned (Node, Reason); see Ban
	KindUnban        Kind = "unban"          // a node's ban was lifted (Node, Reason); see Unban
)

// Valid reports whether k is one of the Kind constants.
func (k Kind) Valid() bool {
	switch k {
	case KindIssuance, KindRenewal, KindRevocation, KindCAKeyChange, KindJoinTokenUse, KindBan, KindUnban:
		return true
	}
	return false
}

// IsCertificate reports whether events of kind k describe a newly signed
// certificate (issuance or renewal).
func (k Kind) IsCertificate() bool { return k == KindIssuance || k == KindRenewal }

// Event is one audit-log entry. Which fields are set depends on Kind:
// issuance and renewal carry the whole certificate description; revocation
// carries Serial, Reason and (copied from the issuance entry) SPIFFEID, Node
// and NotAfter; bans and unbans carry Node and Reason; CA key changes and
// join-token uses carry what applies.
type Event struct {
	Kind Kind
	// Time is when the event happened; zero means the ledger's clock at Append.
	Time time.Time
	// Serial is the certificate serial number in lower-case hex.
	Serial   string
	SPIFFEID string
	Node     string
	// NotBefore and NotAfter are the certificate's validity window. An
	// event with a NotAfter may be pruned once NotAfter is older than the
	// retention period.
	NotBefore, NotAfter time.Time
	// PublicKeySHA256 is the hex SHA-256 of the leaf's SubjectPublicKeyInfo.
	PublicKeySHA256 string
	// CertDER is the leaf certificate, for issuance and renewal.
	CertDER []byte
	// Reason is the revocation reason or other free-form detail.
	Reason string
	// Parent is the serial of the certificate whose holder obtained this
	// one by renewing it (an agent SVID renewed with RenewAgent, a workload
	// SVID renewed with its own certificate over the Istio API); "" for a
	// certificate obtained by attestation. It makes lineages walkable
	// (Ancestors, Descendants).
	Parent string
}

// Entry is an Event as stored in the log, at a position (Index) in the
// Merkle tree.
type Entry struct {
	Event
	// Index is the position of the entry in the log, from 0.
	Index uint64
	// LeafHash is the RFC 6962 leaf hash of Data.
	LeafHash []byte
	// Data is the exact encoded entry the leaf hash commits to (nil when
	// Pruned). It is what an auditor re-hashes.
	Data []byte
	// Pruned reports that the full entry was removed after its retention
	// period; only Index and LeafHash remain.
	Pruned bool
	// Revoked is set on certificate entries whose serial has been revoked.
	Revoked *Revocation
}

// Revocation describes the revocation of a certificate.
type Revocation struct {
	// Index is the position of the revocation event in the log.
	Index  uint64
	Time   time.Time
	Reason string
}

// wireEntry is the leaf encoding: versioned JSON with a fixed field order.
// The index is part of the leaf, so an entry cannot be moved to another
// position without changing its hash.
type wireEntry = wireEntryOf[string]

// wireEntryOf is wireEntry with the certificate's type as a parameter:
// string (base64) to encode and decode, skipped to decode without it.
type wireEntryOf[C any] struct {
	V               int    `json:"v"`
	Index           uint64 `json:"index"`
	Kind            Kind   `json:"kind"`
	Time            string `json:"time"`
	Serial          string `json:"serial,omitempty"`
	SPIFFEID        string `json:"spiffe_id,omitempty"`
	Node            string `json:"node,omitempty"`
	NotBefore       string `json:"not_before,omitempty"`
	NotAfter        string `json:"not_after,omitempty"`
	PublicKeySHA256 string `json:"public_key_sha256,omitempty"`
	Cert            C      `json:"cert,omitempty"`
	Reason          string `json:"reason,omitempty"`
	Parent          string `json:"parent,omitempty"`
}

// skipped is a JSON value decoded into nothing (not even a copy).
type skipped struct{}

// UnmarshalJSON implements json.Unmarshaler.
func (*skipped) UnmarshalJSON([]byte) error { return nil }

const wireVersion = 1

func FormatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	return time.Parse(time.RFC3339Nano, s)
}

// summaryOf returns, in a new slice, what encodeSummary returns for the
// event that encodeEvent encoded as data: data without its "cert" member.
// The member can be found by its bytes: every field before it is a JSON
// string, in which a quote is escaped, so `,"cert":"` occurs nowhere
// else, and base64 holds no quote.
func SummaryOf(data []byte) []byte {
	const member = `,"cert":"`
	i := bytes.Index(data, []byte(member))
	if i < 0 {
		return bytes.Clone(data)
	}
	j := bytes.IndexByte(data[i+len(member):], '"')
	if j < 0 {
		return bytes.Clone(data)
	}
	end := i + len(member) + j + 1
	out := make([]byte, 0, len(data)-(end-i))
	return append(append(out, data[:i]...), data[end:]...)
}

// encodeSummary returns the index value of ev: its leaf encoding without
// the certificate.
func EncodeSummary(index uint64, ev *Event) ([]byte, error) {
	sum := *ev
	sum.CertDER = nil
	return Encode(index, &sum)
}

// DecodeEntry parses leaf data as written by the ledger. It does not check
// the leaf hash; see Verify.
func Decode(data []byte) (Entry, error) {
	return decodeWire(data, func(cert string) ([]byte, error) {
		if cert == "" {
			return nil, nil
		}
		return base64.StdEncoding.DecodeString(cert)
	})
}

// decodeEvent is DecodeEntry without the certificate (CertDER nil), which
// it neither copies nor decodes: for the indexer and the follower, which
// need only the event's description.
func DecodeEvent(data []byte) (Entry, error) {
	return decodeWire(data, func(skipped) ([]byte, error) { return nil, nil })
}

// decodeWire parses leaf data whose certificate decodes as C, turned into
// DER by cert.
func decodeWire[C any](data []byte, cert func(C) ([]byte, error)) (Entry, error) {
	var w wireEntryOf[C]
	if err := json.Unmarshal(data, &w); err != nil {
		return Entry{}, fmt.Errorf("ledger: decode entry: %w", err)
	}
	if w.V != wireVersion {
		return Entry{}, fmt.Errorf("ledger: decode entry: unsupported version %d", w.V)
	}
	e := Entry{Index: w.Index, Data: data}
	e.Kind, e.Serial, e.SPIFFEID, e.Node = w.Kind, w.Serial, w.SPIFFEID, w.Node
	e.PublicKeySHA256, e.Reason, e.Parent = w.PublicKeySHA256, w.Reason, w.Parent
	var err error
	for _, f := range []struct {
		dst *time.Time
		src string
	}{{&e.Time, w.Time}, {&e.NotBefore, w.NotBefore}, {&e.NotAfter, w.NotAfter}} {
		if *f.dst, err = parseTime(f.src); err != nil {
			return Entry{}, fmt.Errorf("ledger: decode entry %d: %w", w.Index, err)
		}
	}
	if e.CertDER, err = cert(w.Cert); err != nil {
		return Entry{}, fmt.Errorf("ledger: decode entry %d: certificate: %w", w.Index, err)
	}
	return e, nil
}

// Validate checks an event before it is appended.
func (ev *Event) Validate() error {
	if !ev.Kind.Valid() {
		return fmt.Errorf("%w: unknown kind %q", ErrInvalidEvent, ev.Kind)
	}
	if (ev.Kind.IsCertificate() || ev.Kind == KindRevocation) && ev.Serial == "" {
		return fmt.Errorf("%w: %s event without a serial", ErrInvalidEvent, ev.Kind)
	}
	if ev.Kind.IsCertificate() && ev.SPIFFEID == "" {
		return fmt.Errorf("%w: %s event without a SPIFFE ID", ErrInvalidEvent, ev.Kind)
	}
	if (ev.Kind == KindBan || ev.Kind == KindUnban) && ev.Node == "" {
		return fmt.Errorf("%w: %s event without a node", ErrInvalidEvent, ev.Kind)
	}
	for _, s := range []string{ev.Serial, ev.Parent} {
		for _, c := range s {
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
				return fmt.Errorf("%w: serial %q is not lower-case hex", ErrInvalidEvent, s)
			}
		}
	}
	if ev.Parent != "" && !ev.Kind.IsCertificate() {
		return fmt.Errorf("%w: %s event with a parent serial", ErrInvalidEvent, ev.Kind)
	}
	return nil
}
