package ledger

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/follow"
	"github.com/castellan-dev/castellan/ca/ledger/index"
	"github.com/castellan-dev/castellan/ca/ledger/reserve"
	"github.com/castellan-dev/castellan/ca/ledger/tree"
	"github.com/castellan-dev/castellan/ca/store"
)

// Append adds events to the log, in order, and returns their indices. All
// events of one call go into one transaction, and concurrent calls
// are grouped into shared transactions (group commit, package commit: an
// Append arriving while the ledger is idle is committed at once, those
// arriving during a commit share the next transaction); Append returns only
// after that transaction is committed and durable, so an entry is durable
// before the caller hands out the certificate it records. If the store
// cannot be reached, the error wraps store.ErrUnavailable. Events with a
// zero Time get the ledger clock's time. The secondary indexes (serial,
// SPIFFE ID, node, expiry, revocations, agent records), which every query
// waits for, are written where they cost least (see appendTx). Safe for
// concurrent use.
func (l *Ledger) Append(ctx context.Context, events ...entry.Event) ([]uint64, error) {
	if len(events) == 0 {
		return nil, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("ledger: append: %w", err)
	}
	if l.readOnly {
		return nil, entry.ErrReadOnly
	}
	evs := make([]entry.Event, len(events))
	now := l.clock.Now()
	size := uint64(0)
	for i := range events {
		size += uint64(len(events[i].CertDER)) + eventOverhead
		evs[i] = events[i]
		if evs[i].Time.IsZero() {
			evs[i].Time = now
		}
		if err := evs[i].Validate(); err != nil {
			return nil, err
		}
	}
	if !reserve.Uses(ctx) {
		if err := l.reserve.Allow(size); err != nil {
			return nil, err
		}
	}
	start := time.Now()
	res, err := l.commit.Append(ctx, evs)
	l.metrics.observeAppend(time.Since(start), err)
	if err != nil {
		if l.isClosed() {
			return nil, entry.ErrClosed
		}
		return nil, fmt.Errorf("ledger: append: %w", err)
	}
	first := res.First
	l.committed(ctx, first, evs)
	idx := make([]uint64, len(evs))
	for i := range idx {
		idx[i] = first + uint64(i)
	}
	return idx, nil
}

// eventOverhead estimates an encoded event's size besides its certificate.
const eventOverhead = 512

// appendTx writes evs at the end of the tree stored in tx, read from tx
// (on a shared store another replica may have appended). On the ledger's
// own bbolt file, whose commit costs a write per page touched, the indexer
// indexes many appends per pass, sharing pages. On a shared store (cost
// per row and round trip; replicas' indexers would contend) an append
// indexes its own events if the stored index position is where they begin.
func (l *Ledger) appendTx(tx store.Tx, evs []entry.Event) (follow.Appended, error) {
	st, indexed, err := tree.ReadWithIndexed(tx)
	if err != nil {
		return follow.Appended{}, err
	}
	h := tree.NewHasher(len(evs))
	r, err := st.RangeWith(h)
	if err != nil {
		return follow.Appended{}, err
	}
	first := r.End()
	encoded, err := tree.AppendEntries(tx, r, h, evs)
	if err != nil {
		return follow.Appended{}, err
	}
	if err := tree.Write(tx, r); err != nil {
		return follow.Appended{}, err
	}
	res := follow.Appended{First: first, Head: tree.Head{Size: r.End(), Hashes: r.Hashes()}, Indexed: indexed}
	if !l.shared {
		res.Encoded = encoded // for the indexer (publish)
	} else if res.Indexed == first {
		if err := index.WriteTx(tx, first, evs, encoded); err != nil {
			return follow.Appended{}, err
		}
		res.Indexed = res.Head.Size
	}
	return res, nil
}

// committed writes the audit log lines and metrics of a committed append,
// in the caller's goroutine (publish has already run).
func (l *Ledger) committed(ctx context.Context, first uint64, evs []entry.Event) {
	if l.audit.Enabled(ctx, slog.LevelInfo) {
		attrs := make([]slog.Attr, 0, 10) // one list for every line: LogAttrs copies it
		for i := range evs {
			attrs = l.auditLine(ctx, attrs[:0], first+uint64(i), &evs[i])
		}
	}
	l.metrics.appended(evs)
}

// auditLine writes the JSON audit log line of one event (through
// l.audit, which carries the "audit" attribute already formatted), with
// attrs as the list of its attributes, and returns the list.
func (l *Ledger) auditLine(ctx context.Context, attrs []slog.Attr, index uint64, ev *entry.Event) []slog.Attr {
	attrs = append(attrs, slog.Uint64("index", index), slog.String("kind", string(ev.Kind)), slog.Time("time", ev.Time))
	for _, a := range [...]struct{ k, v string }{
		{"serial", ev.Serial}, {"spiffe_id", ev.SPIFFEID}, {"node", ev.Node},
		{"not_before", entry.FormatTime(ev.NotBefore)}, {"not_after", entry.FormatTime(ev.NotAfter)},
		{"public_key_sha256", ev.PublicKeySHA256}, {"reason", ev.Reason},
	} {
		if a.v != "" {
			attrs = append(attrs, slog.String(a.k, a.v))
		}
	}
	l.audit.LogAttrs(ctx, slog.LevelInfo, "ledger event", attrs...)
	return attrs
}

func (l *Ledger) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}
