package index

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/tree"
	"github.com/castellan-dev/castellan/ca/store"
)

// Paging limits for List.
const (
	MaxPageSize = 1000
	// MaxScan bounds the index keys one List call examines, so a filter
	// that matches little still answers quickly; the call then returns a
	// short (possibly empty) page and a token to continue.
	MaxScan = 4096
)

// State selects certificates by their state at the ledger clock's time.
type State int

// States for Filter.State.
const (
	StateAny     State = iota
	StateActive        // not revoked, NotAfter in the future
	StateExpired       // NotAfter in the past
	StateRevoked       // revoked
)

// Filter selects entries for List. Zero fields do not filter. At most one
// of Serial, SPIFFEID, SPIFFEIDPrefix and Node selects the index scanned;
// the others are applied to what that index yields.
type Filter struct {
	Serial         string
	SPIFFEID       string
	SPIFFEIDPrefix string
	// Namespace matches SPIFFE IDs with the path /ns/<Namespace>/...
	Namespace string
	Node      string
	// Kinds limits the event kinds (empty: all).
	Kinds []entry.Kind
	// Since and Until bound the event time: Since <= Time < Until.
	Since, Until time.Time
	State        State
}

// Entry returns the entry at index.
func (x *Index) Entry(ctx context.Context, index uint64) (entry.Entry, error) {
	if err := Wait(x, ctx); err != nil {
		return entry.Entry{}, err
	}
	var e entry.Entry
	err := x.view(ctx, func(tx store.Tx) error {
		var err error
		e, err = ReadEntry(tx, index)
		return err
	})
	return e, err
}

// Get returns the issuance or renewal entry of the certificate with the
// given serial (hex, any case), with its revocation if any; ErrNotFound if
// the log has none.
func (x *Index) Get(ctx context.Context, serial string) (entry.Entry, error) {
	serial, err := entry.NormalizeSerial(serial)
	if err != nil {
		return entry.Entry{}, err
	}
	if err := Wait(x, ctx); err != nil {
		return entry.Entry{}, err
	}
	var e entry.Entry
	err = x.view(ctx, func(tx store.Tx) error {
		for _, idx := range LookupSerial(tx, serial) {
			c, err := ReadEntry(tx, idx)
			if err != nil {
				return err
			}
			if c.Kind.IsCertificate() {
				e = c
				return nil
			}
		}
		return fmt.Errorf("%w: no certificate with serial %s in the log", entry.ErrNotFound, serial)
	})
	return e, err
}

// ReadEntry reads and decodes entry idx with its leaf hash and revocation.
func ReadEntry(tx store.Tx, idx uint64) (entry.Entry, error) {
	return EntryAt(tx, idx, tree.Bucket(tx, tree.Entries).Get(tree.Key(idx)), tree.Bucket(tx, tree.Nodes).Get(tree.Key(idx)))
}

// EntryAt decodes entry idx from its stored value v and nodes record rec
// (the caller read them), with its revocation.
func EntryAt(tx store.Tx, idx uint64, v, rec []byte) (entry.Entry, error) {
	if v == nil {
		st, err := tree.Read(tx)
		if err == nil && idx < st.Size {
			return entry.Entry{}, fmt.Errorf("%w: entry %d is missing from the file", entry.ErrDamaged, idx)
		}
		return entry.Entry{}, fmt.Errorf("%w: no entry %d", entry.ErrNotFound, idx)
	}
	lh := tree.LeafHash(rec)
	if lh == nil {
		return entry.Entry{}, fmt.Errorf("ledger: tree node (level 0, index %d) is missing or damaged", idx)
	}
	if bytes.Equal(v, tree.PrunedMarker) {
		return entry.Entry{Index: idx, LeafHash: append([]byte(nil), lh...), Pruned: true}, nil
	}
	e, err := entry.Decode(append([]byte(nil), v...))
	if err != nil {
		return entry.Entry{}, fmt.Errorf("ledger: entry %d is damaged: %w", idx, err)
	}
	if e.Index != idx {
		return entry.Entry{}, fmt.Errorf("ledger: entry stored at %d says it is entry %d", idx, e.Index)
	}
	e.LeafHash = append([]byte(nil), lh...)
	e.Revoked = revocationOf(tx, &e)
	return e, nil
}

// revocationOf returns the revocation of a certificate entry, if any.
func revocationOf(tx store.Tx, e *entry.Entry) *entry.Revocation {
	if !e.Kind.IsCertificate() {
		return nil
	}
	rv := tree.Bucket(tx, bRevoked).Get([]byte(e.Serial))
	if rv == nil {
		return nil
	}
	var r Revoked
	if err := json.Unmarshal(rv, &r); err != nil {
		return nil
	}
	return &entry.Revocation{Index: r.Index, Time: r.Time, Reason: r.Reason}
}

// List returns up to pageSize entries matching f, in log order within the
// scanned index, and a token for the next page ("" when there is none).
// Listed entries are summaries: CertDER, Data and LeafHash are empty (use
// Get or Entry for the full entry).
// pageSize must be 1..MaxPageSize: the ledger refuses unbounded scans. A
// page may hold fewer entries than pageSize, even none, with a non-empty
// token, when the scan budget of one call ran out.
func (x *Index) List(ctx context.Context, f Filter, pageSize int, pageToken string) ([]entry.Entry, string, error) {
	if pageSize <= 0 || pageSize > MaxPageSize {
		return nil, "", fmt.Errorf("%w: page size must be between 1 and %d, got %d", entry.ErrInvalidArgument, MaxPageSize, pageSize)
	}
	sc, err := newScan(f)
	if err != nil {
		return nil, "", err
	}
	after, err := sc.decodeToken(pageToken)
	if err != nil {
		return nil, "", err
	}
	if err := Wait(x, ctx); err != nil {
		return nil, "", err
	}
	now := x.clock.Now()
	var out []entry.Entry
	var next string
	err = x.view(ctx, func(tx store.Tx) error {
		c := tree.Bucket(tx, sc.bucket).Cursor()
		k, v := c.First()
		if sc.prefix != nil {
			k, v = c.Seek(sc.prefix)
		}
		if after != nil {
			if k, v = c.Seek(after); k != nil && bytes.Equal(k, after) {
				k, v = c.Next()
			}
		}
		var last []byte
		for n := 0; k != nil && sc.match(k); k, v = c.Next() {
			if n++; n > MaxScan || len(out) == pageSize {
				next = sc.token(last)
				return nil
			}
			last = k
			if err := ctx.Err(); err != nil {
				return err
			}
			e, err := sc.read(tx, k, v)
			if err != nil {
				return err
			}
			if !e.Pruned && f.matches(&e, now) {
				e.CertDER, e.Data, e.LeafHash = nil, nil, nil
				out = append(out, e)
			}
		}
		return nil
	})
	return out, next, err
}

// scan is the index List walks for a filter.
type scan struct {
	tag    byte
	bucket []byte
	prefix []byte
	exact  bool // keys are <prefix><8-byte index>
}

func newScan(f Filter) (*scan, error) {
	set := 0
	for _, v := range []string{f.Serial, f.SPIFFEID, f.SPIFFEIDPrefix, f.Node} {
		if v != "" {
			set++
		}
	}
	switch {
	case set > 1 && f.Serial == "":
		// Several index filters: scan the most selective, filter the rest.
	case f.Serial != "":
		s, err := entry.NormalizeSerial(f.Serial)
		if err != nil {
			return nil, err
		}
		return &scan{tag: 's', bucket: bSerial, prefix: append([]byte(s), 0), exact: true}, nil
	}
	switch {
	case f.SPIFFEID != "":
		return &scan{tag: 'i', bucket: bSPIFFE, prefix: append([]byte(f.SPIFFEID), 0), exact: true}, nil
	case f.SPIFFEIDPrefix != "":
		return &scan{tag: 'p', bucket: bSPIFFE, prefix: []byte(f.SPIFFEIDPrefix)}, nil
	case f.Node != "":
		return &scan{tag: 'n', bucket: bNode, prefix: append([]byte(f.Node), 0), exact: true}, nil
	}
	return &scan{tag: 'e', bucket: tree.Entries}, nil
}

func (s *scan) match(k []byte) bool {
	if !bytes.HasPrefix(k, s.prefix) {
		return false
	}
	if s.tag == 'e' {
		return len(k) == 8
	}
	return !s.exact || len(k) == len(s.prefix)+8
}

// read returns the entry of index key k with value v: the summary stored
// in the index when there is one, else the entry itself.
func (s *scan) read(tx store.Tx, k, v []byte) (entry.Entry, error) {
	if s.tag == 'e' {
		return ReadEntry(tx, tree.IndexOf(k))
	}
	if len(v) == 0 {
		return ReadEntry(tx, tree.IndexOf(k))
	}
	e, err := entry.Decode(v)
	if err != nil || e.Index != tree.IndexOf(k) {
		return ReadEntry(tx, tree.IndexOf(k)) // damaged summary: fall back to the entry
	}
	e.Revoked = revocationOf(tx, &e)
	return e, nil
}

// token encodes the last key examined; the next page starts after it.
func (s *scan) token(last []byte) string {
	return base64.RawURLEncoding.EncodeToString(append([]byte{s.tag}, last...))
}

func (s *scan) decodeToken(t string) ([]byte, error) {
	if t == "" {
		return nil, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(t)
	if err != nil || len(b) < 9 || b[0] != s.tag || !s.match(b[1:]) {
		return nil, fmt.Errorf("%w: page token does not belong to this query; start again without one", entry.ErrInvalidArgument)
	}
	return b[1:], nil
}

func (f *Filter) matches(e *entry.Entry, now time.Time) bool {
	if f.SPIFFEID != "" && e.SPIFFEID != f.SPIFFEID ||
		f.SPIFFEIDPrefix != "" && !strings.HasPrefix(e.SPIFFEID, f.SPIFFEIDPrefix) ||
		f.Node != "" && e.Node != f.Node ||
		f.Namespace != "" && !strings.Contains(e.SPIFFEID, "/ns/"+f.Namespace+"/") ||
		!f.Since.IsZero() && e.Time.Before(f.Since) ||
		!f.Until.IsZero() && !e.Time.Before(f.Until) {
		return false
	}
	if len(f.Kinds) > 0 {
		ok := false
		for _, k := range f.Kinds {
			ok = ok || e.Kind == k
		}
		if !ok {
			return false
		}
	}
	switch f.State {
	case StateActive:
		return e.Kind.IsCertificate() && e.Revoked == nil && e.NotAfter.After(now)
	case StateExpired:
		return e.Kind.IsCertificate() && !e.NotAfter.After(now)
	case StateRevoked:
		return e.Kind.IsCertificate() && e.Revoked != nil
	}
	return true
}
