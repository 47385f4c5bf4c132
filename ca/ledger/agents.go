package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/index"
	"github.com/castellan-dev/castellan/ca/store"
)

// The agents and bans of the log.
//
// The log is the durable store of node bans: a ban is a KindBan event and
// an unban a KindUnban event, so a ban survives restarts and is as
// auditable as an issuance. The indexer folds the events that concern a
// node's agent (its agent SVIDs, join-token uses, bans and unbans) into one
// record per node in the agents bucket; Open loads the bans in force from
// it, and committed appends update them in memory, so Banned is cheap
// enough for every call.

// Errors of Ban and Unban; test with errors.Is.
var (
	// ErrAlreadyBanned: Ban of a node that is banned.
	ErrAlreadyBanned = errors.New("ledger: node already banned")
	// ErrNotBanned: Unban of a node that is not banned.
	ErrNotBanned = errors.New("ledger: node not banned")
)

// Ban is a node ban in force.
type Ban struct {
	Node   string
	Index  uint64 // the ban event's position in the log
	Time   time.Time
	Reason string
}

// Agent is what the log knows about the agent of one node.
type Agent struct {
	Node string
	// SPIFFEID, Serial and NotAfter describe the latest agent SVID issued
	// to the node (empty if none was, e.g. a node banned before it joined).
	SPIFFEID string
	Serial   string
	NotAfter time.Time
	// FirstSeen and LastSeen are the times of the first and the latest
	// agent SVID or join-token use of the node.
	FirstSeen, LastSeen time.Time
	// Ban is the ban in force, nil when the node is not banned.
	Ban *Ban
}

// BanResult is what Ban recorded.
type BanResult struct {
	Ban Ban
	// Revoked are the serials of the node's unexpired certificates that
	// the ban revoked.
	Revoked []string
}

// agentOf returns the Agent of node's record.
func agentOf(r *index.AgentRecord, node string) Agent {
	a := Agent{Node: node, SPIFFEID: r.SPIFFEID, Serial: r.Serial, NotAfter: r.NotAfter,
		FirstSeen: r.FirstSeen, LastSeen: r.LastSeen}
	if r.Banned {
		a.Ban = &Ban{Node: node, Index: r.BanIndex, Time: r.BanTime, Reason: r.BanReason}
	}
	return a
}

// loadBans loads the bans in force (Open, after the indexes caught up).
func (l *Ledger) loadBans(tx store.Tx) error {
	l.bans = map[string]Ban{}
	bucket := tx.Bucket(index.AgentsBucket)
	if bucket == nil {
		return nil
	}
	return bucket.ForEach(func(k, v []byte) error {
		var r index.AgentRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("ledger: agent record of node %s is damaged: %w", k, err)
		}
		if a := agentOf(&r, string(k)); a.Ban != nil {
			l.bans[string(k)] = *a.Ban
		}
		return nil
	})
}

// Banned returns the ban in force for node, if any. It reads an in-memory
// set and is cheap enough for every call.
func (l *Ledger) Banned(node string) (Ban, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.bans[node]
	return b, ok
}

// BansChanged returns a channel closed at the next ban or unban. As with
// RevocationsChanged, take the channel before reading the bans.
func (l *Ledger) BansChanged() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.banCh == nil {
		l.banCh = make(chan struct{})
	}
	return l.banCh
}

// Agents returns every node the log knows an agent or a ban of, sorted by
// node name.
func (l *Ledger) Agents(ctx context.Context) ([]Agent, error) {
	if err := index.Wait(l.Index, ctx); err != nil {
		return nil, err
	}
	var out []Agent
	err := l.view(ctx, func(tx store.Tx) error {
		bucket := tx.Bucket(index.AgentsBucket)
		if bucket == nil {
			return nil
		}
		return bucket.ForEach(func(k, v []byte) error {
			var r index.AgentRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("ledger: agent record of node %s is damaged: %w", k, err)
			}
			out = append(out, agentOf(&r, string(k)))
			return nil
		})
	})
	return out, err
}

// Agent returns what the log knows about node's agent; ErrNotFound if
// nothing.
func (l *Ledger) Agent(ctx context.Context, node string) (Agent, error) {
	if err := index.Wait(l.Index, ctx); err != nil {
		return Agent{}, err
	}
	var a Agent
	err := l.view(ctx, func(tx store.Tx) error {
		var v []byte
		if bucket := tx.Bucket(index.AgentsBucket); bucket != nil {
			v = bucket.Get([]byte(node))
		}
		if v == nil {
			return fmt.Errorf("%w: no agent of node %q in the log", entry.ErrNotFound, node)
		}
		var r index.AgentRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("ledger: agent record of node %s is damaged: %w", node, err)
		}
		a = agentOf(&r, node)
		return nil
	})
	return a, err
}

// NodeCertificates returns the certificates issued to node (agent and
// workload SVIDs) that are neither revoked nor expired at now, as List
// summaries.
func (l *Ledger) NodeCertificates(ctx context.Context, node string, now time.Time) ([]entry.Entry, error) {
	f := index.Filter{Node: node, Kinds: []entry.Kind{entry.KindIssuance, entry.KindRenewal}}
	var out []entry.Entry
	token := ""
	for {
		page, next, err := l.List(ctx, f, index.MaxPageSize, token)
		if err != nil {
			return nil, err
		}
		for _, e := range page {
			if e.Revoked == nil && e.NotAfter.After(now) && !l.IsRevoked(e.Serial, now) {
				out = append(out, e)
			}
		}
		if next == "" {
			return out, nil
		}
		token = next
	}
}

// banRevocationReason is the revocation reason of certificates revoked by
// a ban.
func banRevocationReason(node, reason string) string {
	return fmt.Sprintf("node %s banned: %s", node, reason)
}

// Ban bans node: one append records the ban and the revocation of every
// unexpired certificate issued to the node. ErrAlreadyBanned if it is
// banned. A certificate that a call in flight records after the scan is
// revoked by the RevokeNodeCertificates call that follows; callers that
// issue to a node check Banned after recording and call
// RevokeNodeCertificates, so none escapes.
func (l *Ledger) Ban(ctx context.Context, node, reason string) (BanResult, error) {
	if node == "" {
		return BanResult{}, fmt.Errorf("%w: node is required", entry.ErrInvalidArgument)
	}
	l.revokeMu.Lock()
	if b, ok := l.Banned(node); ok {
		l.revokeMu.Unlock()
		return BanResult{}, fmt.Errorf("%w: node %s since %s (entry %d)", ErrAlreadyBanned, node,
			b.Time.UTC().Format(time.RFC3339), b.Index)
	}
	evs := []entry.Event{{Kind: entry.KindBan, Node: node, Reason: reason}}
	revs, err := l.nodeRevocations(ctx, node, reason)
	if err != nil {
		l.revokeMu.Unlock()
		return BanResult{}, err
	}
	idx, err := l.Append(ctx, append(evs, revs...)...)
	l.revokeMu.Unlock()
	if err != nil {
		return BanResult{}, err
	}
	res := BanResult{Ban: Ban{Node: node, Index: idx[0], Reason: reason}}
	if b, ok := l.Banned(node); ok {
		res.Ban = b
	}
	for _, r := range revs {
		res.Revoked = append(res.Revoked, r.Serial)
	}
	more, err := l.RevokeNodeCertificates(ctx, node)
	return BanResult{Ban: res.Ban, Revoked: append(res.Revoked, more...)}, err
}

// nodeRevocations returns revocation events for node's unexpired,
// unrevoked certificates. revokeMu is held.
func (l *Ledger) nodeRevocations(ctx context.Context, node, reason string) ([]entry.Event, error) {
	certs, err := l.NodeCertificates(ctx, node, l.clock())
	if err != nil {
		return nil, err
	}
	evs := make([]entry.Event, 0, len(certs))
	for _, c := range certs {
		evs = append(evs, entry.Event{Kind: entry.KindRevocation, Serial: c.Serial, SPIFFEID: c.SPIFFEID, Node: node,
			NotAfter: c.NotAfter, Reason: banRevocationReason(node, reason)})
	}
	return evs, nil
}

// RevokeNodeCertificates revokes, in one append, every unexpired and
// unrevoked certificate issued to node if node is banned, and returns
// their serials. It does nothing for a node that is not banned. Callers
// run it after recording certificates for a node they then find banned,
// and at start for every ban (a crash may have cut a Ban short).
func (l *Ledger) RevokeNodeCertificates(ctx context.Context, node string) ([]string, error) {
	l.revokeMu.Lock()
	defer l.revokeMu.Unlock()
	b, ok := l.Banned(node)
	if !ok {
		return nil, nil
	}
	revs, err := l.nodeRevocations(ctx, node, b.Reason)
	if err != nil || len(revs) == 0 {
		return nil, err
	}
	if _, err := l.Append(ctx, revs...); err != nil {
		return nil, err
	}
	out := make([]string, len(revs))
	for i, r := range revs {
		out[i] = r.Serial
	}
	return out, nil
}

// Unban lifts node's ban (a KindUnban event). Certificates the ban
// revoked stay revoked. ErrNotBanned if it is not banned.
func (l *Ledger) Unban(ctx context.Context, node, reason string) (entry.Entry, error) {
	l.revokeMu.Lock()
	defer l.revokeMu.Unlock()
	if _, ok := l.Banned(node); !ok {
		return entry.Entry{}, fmt.Errorf("%w: node %q", ErrNotBanned, node)
	}
	idx, err := l.Append(ctx, entry.Event{Kind: entry.KindUnban, Node: node, Reason: reason})
	if err != nil {
		return entry.Entry{}, err
	}
	return l.Entry(ctx, idx[0])
}
