// Package lineage is the ledger's certificate lineages: a certificate
// obtained by renewing another records that one's serial as its Parent,
// and the index maps a serial to its children. It walks them (Ancestors,
// Descendants, Children, RevokedAncestor), always within bounds, and
// revokes a certificate with its descendants.
package lineage

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/index"
	"github.com/castellan-dev/castellan/ca/ledger/revocation"
	"github.com/castellan-dev/castellan/ca/store"
)

// Walks are bounded: a lineage longer or wider than the bound is reported
// as truncated, never walked without end.

// Lineages walks and revokes the lineages of a ledger's certificates.
type Lineages struct {
	rv revocation.Revoker
}

// New returns the lineages of a ledger that reads and revokes through rv.
func New(rv revocation.Revoker) *Lineages { return &Lineages{rv: rv} }

// MaxWalk bounds the certificates one Ancestors or Descendants call
// visits, and RevokeWithDescendants revokes.
const MaxWalk = 10000

// lineageSettleRounds bounds how often RevokeWithDescendants looks again
// for descendants that renewals in flight recorded meanwhile.
const lineageSettleRounds = 3

// certTx returns the issuance or renewal entry of serial (normalized).
func certTx(tx store.Tx, serial string) (entry.Entry, error) {
	for _, idx := range index.LookupSerial(tx, serial) {
		c, err := index.ReadEntry(tx, idx)
		if err != nil {
			return entry.Entry{}, err
		}
		if c.Kind.IsCertificate() {
			return c, nil
		}
	}
	return entry.Entry{}, fmt.Errorf("%w: no certificate with serial %s in the log", entry.ErrNotFound, serial)
}

// lineageWalk prepares a walk of serial's lineage: the serial in its one
// form, max bounded by MaxWalk, and the indexes up to date.
func (g *Lineages) lineageWalk(ctx context.Context, serial string, max int) (string, int, error) {
	serial, err := entry.NormalizeSerial(serial)
	if err != nil {
		return "", 0, err
	}
	return serial, min(max, MaxWalk), index.Wait(g.rv.Index, ctx)
}

// Ancestors returns the certificates serial descends from, its parent
// first, up to max of them (1..MaxWalk), and whether the walk
// stopped at max before reaching a certificate without a parent. An
// ancestor missing from the log (pruned) ends the walk.
func (g *Lineages) Ancestors(ctx context.Context, serial string, max int) ([]entry.Entry, bool, error) {
	serial, max, err := g.lineageWalk(ctx, serial, max)
	if err != nil {
		return nil, false, err
	}
	var out []entry.Entry
	truncated := false
	err = index.View(g.rv.Index, ctx, func(tx store.Tx) error {
		c, err := certTx(tx, serial)
		if err != nil {
			return err
		}
		seen := map[string]bool{serial: true}
		for p := c.Parent; p != "" && !seen[p]; p = c.Parent {
			if len(out) >= max {
				truncated = true
				return nil
			}
			seen[p] = true
			if c, err = certTx(tx, p); err != nil {
				return nil // pruned or never logged: the lineage ends here
			}
			out = append(out, c)
		}
		return nil
	})
	return out, truncated, err
}

// Descendants returns the certificates descended from serial, breadth
// first (children, then grandchildren, ...), up to max of them
// (1..MaxWalk), and whether the walk stopped at max.
func (g *Lineages) Descendants(ctx context.Context, serial string, max int) ([]entry.Entry, bool, error) {
	serial, max, err := g.lineageWalk(ctx, serial, max)
	if err != nil {
		return nil, false, err
	}
	var out []entry.Entry
	truncated := false
	err = index.View(g.rv.Index, ctx, func(tx store.Tx) error {
		if _, err := certTx(tx, serial); err != nil {
			return err
		}
		bucket := tx.Bucket(index.ParentBucket)
		if bucket == nil {
			return nil
		}
		seen := map[string]bool{serial: true}
		queue := []string{serial}
		for len(queue) > 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
			prefix := append([]byte(queue[0]), 0)
			queue = queue[1:]
			c := bucket.Cursor()
			for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && len(k) == len(prefix)+8; k, v = c.Next() {
				child := string(v)
				if seen[child] {
					continue
				}
				if len(out) >= max {
					truncated = true
					return nil
				}
				seen[child] = true
				e, err := certTx(tx, child)
				if err != nil {
					continue // pruned
				}
				out = append(out, e)
				queue = append(queue, child)
			}
		}
		return nil
	})
	return out, truncated, err
}

// RevokeWithDescendants revokes the certificate with serial and every
// certificate descended from it that is not revoked yet, in one append,
// and returns the revocation entries (serial's first when it was not
// revoked before). Renewals recorded while it ran are found by looking
// again, up to a few rounds. ErrNotFound for an unknown serial;
// revocation.ErrAlreadyRevoked when the whole lineage was revoked before.
func (g *Lineages) RevokeWithDescendants(ctx context.Context, serial, reason string) ([]entry.Entry, error) {
	serial, err := entry.NormalizeSerial(serial)
	if err != nil {
		return nil, err
	}
	g.rv.Mu.Lock()
	defer g.rv.Mu.Unlock()
	root, err := g.rv.Index.Get(ctx, serial)
	if err != nil {
		return nil, err
	}
	var out []entry.Entry
	for round := 0; round < lineageSettleRounds; round++ {
		desc, _, err := g.Descendants(ctx, serial, MaxWalk)
		if err != nil {
			return out, err
		}
		now := g.rv.Clock.Now()
		var evs []entry.Event
		for _, c := range append([]entry.Entry{root}, desc...) {
			if c.Revoked != nil || g.rv.Revocations.IsRevoked(c.Serial, now) {
				continue
			}
			evs = append(evs, entry.Event{Kind: entry.KindRevocation, Serial: c.Serial, SPIFFEID: c.SPIFFEID, Node: c.Node,
				NotAfter: c.NotAfter, Reason: reason})
		}
		if len(evs) == 0 {
			break
		}
		if out, err = g.appendRevocations(ctx, out, evs); err != nil {
			return out, err
		}
		root.Revoked = &entry.Revocation{}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: serial %s and its descendants", revocation.ErrAlreadyRevoked, serial)
	}
	return out, nil
}

// appendRevocations appends evs and adds their entries to out.
func (g *Lineages) appendRevocations(ctx context.Context, out []entry.Entry, evs []entry.Event) ([]entry.Entry, error) {
	now := g.rv.Clock.Now()
	for i := range evs {
		evs[i].Time = now
	}
	idx, err := g.rv.Append(ctx, evs...)
	if err != nil {
		return out, err
	}
	for i, ev := range evs {
		out = append(out, entry.Entry{Event: ev, Index: idx[i]})
	}
	return out, nil
}

// RevokedAncestor returns the first revoked certificate among serial and
// its ancestors (at most max of them), if any, and whether the lineage
// was longer than max. It is how a front end that renews a certificate
// with itself refuses a lineage cut off by a revocation.
func (g *Lineages) RevokedAncestor(ctx context.Context, serial string, max int, now time.Time) (entry.Entry, bool, bool, error) {
	serial, err := entry.NormalizeSerial(serial)
	if err != nil {
		return entry.Entry{}, false, false, err
	}
	if g.rv.Revocations.IsRevoked(serial, now) {
		c, err := g.rv.Index.Get(ctx, serial)
		return c, true, false, err
	}
	anc, truncated, err := g.Ancestors(ctx, serial, max)
	if err != nil {
		return entry.Entry{}, false, false, err
	}
	for _, a := range anc {
		if a.Revoked != nil {
			return a, true, truncated, nil
		}
	}
	return entry.Entry{}, false, truncated, nil
}

// Children returns the serials of the certificates renewed from serial
// (normalized), in log order, at most max of them.
func (g *Lineages) Children(ctx context.Context, serial string, max int) ([]string, error) {
	serial, err := entry.NormalizeSerial(serial)
	if err != nil {
		return nil, err
	}
	var out []string
	err = index.Read(g.rv.Index, ctx, func(tx store.Tx) error {
		bucket := tx.Bucket(index.ParentBucket)
		if bucket == nil {
			return nil
		}
		prefix := append([]byte(serial), 0)
		c := bucket.Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && len(k) == len(prefix)+8 && len(out) < max; k, v = c.Next() {
			out = append(out, string(v))
		}
		return nil
	})
	return out, err
}
