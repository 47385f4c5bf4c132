// Package agents is what the ledger knows of node agents and bans: the
// record of each node's agent (kept by the index), the bans in force,
// and Ban, Unban and the revocation of a banned node's certificates.
package agents

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/castellan-dev/castellan/ca/ledger/agentrec"
	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/index"
	"github.com/castellan-dev/castellan/ca/ledger/revocation"
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

// Registry is the agents and bans of a ledger. The functions that keep it
// up to date (Load, Apply) are functions, not methods, so that they are
// not promoted to the Ledger that embeds the Registry.
type Registry struct {
	rv revocation.Revoker

	mu    sync.Mutex
	bans  map[string]Ban // node -> ban in force
	banCh chan struct{}  // closed when bans changes; nil until asked for
}

// New returns the registry of a ledger that reads and revokes through rv.
func New(rv revocation.Revoker) *Registry {
	return &Registry{rv: rv, bans: map[string]Ban{}}
}

// Apply applies the bans and unbans among the committed events evs
// (evs[0] at index first) and wakes the waiters if one changed.
func Apply(reg *Registry, first uint64, evs []entry.Event) {
	reg.mu.Lock()
	defer reg.mu.Unlock()
	changed := false
	for i := range evs {
		switch ev := &evs[i]; ev.Kind {
		case entry.KindBan:
			reg.bans[ev.Node] = Ban{Node: ev.Node, Index: first + uint64(i), Time: ev.Time, Reason: ev.Reason}
			changed = true
		case entry.KindUnban:
			delete(reg.bans, ev.Node)
			changed = true
		}
	}
	if changed && reg.banCh != nil {
		close(reg.banCh)
		reg.banCh = nil
	}
}

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
func agentOf(r *agentrec.Record, node string) Agent {
	a := Agent{Node: node, SPIFFEID: r.SPIFFEID, Serial: r.Serial, NotAfter: r.NotAfter,
		FirstSeen: r.FirstSeen, LastSeen: r.LastSeen}
	if r.Banned {
		a.Ban = &Ban{Node: node, Index: r.BanIndex, Time: r.BanTime, Reason: r.BanReason}
	}
	return a
}

// Load replaces the bans in memory with those in force in tx (Open,
// after the indexes caught up).
func Load(reg *Registry, tx store.Tx) error {
	bans := map[string]Ban{}
	defer func() {
		reg.mu.Lock()
		reg.bans = bans
		reg.mu.Unlock()
	}()
	return forEachAgent(tx, func(a Agent) {
		if a.Ban != nil {
			bans[a.Node] = *a.Ban
		}
	})
}

// decodeAgent decodes the stored record of node's agent.
func decodeAgent(node string, v []byte) (Agent, error) {
	var r agentrec.Record
	if err := json.Unmarshal(v, &r); err != nil {
		return Agent{}, fmt.Errorf("ledger: agent record of node %s is damaged: %w", node, err)
	}
	return agentOf(&r, node), nil
}

// forEachAgent calls fn with the agent of every record stored in tx, in
// node order.
func forEachAgent(tx store.Tx, fn func(Agent)) error {
	bucket := tx.Bucket(index.AgentsBucket)
	if bucket == nil {
		return nil
	}
	return bucket.ForEach(func(k, v []byte) error {
		a, err := decodeAgent(string(k), v)
		if err == nil {
			fn(a)
		}
		return err
	})
}

// Banned returns the ban in force for node, if any. It reads an in-memory
// set and is cheap enough for every call.
func (reg *Registry) Banned(node string) (Ban, bool) {
	reg.mu.Lock()
	defer reg.mu.Unlock()
	b, ok := reg.bans[node]
	return b, ok
}

// BansChanged returns a channel closed at the next ban or unban. As with
// RevocationsChanged, take the channel before reading the bans.
func (reg *Registry) BansChanged() <-chan struct{} {
	reg.mu.Lock()
	defer reg.mu.Unlock()
	if reg.banCh == nil {
		reg.banCh = make(chan struct{})
	}
	return reg.banCh
}

// Agents returns every node the log knows an agent or a ban of, sorted by
// node name.
func (reg *Registry) Agents(ctx context.Context) ([]Agent, error) {
	var out []Agent
	err := index.Read(reg.rv.Index, ctx, func(tx store.Tx) error {
		return forEachAgent(tx, func(a Agent) { out = append(out, a) })
	})
	return out, err
}

// Agent returns what the log knows about node's agent; ErrNotFound if
// nothing.
func (reg *Registry) Agent(ctx context.Context, node string) (Agent, error) {
	var a Agent
	err := index.Read(reg.rv.Index, ctx, func(tx store.Tx) error {
		var v []byte
		if bucket := tx.Bucket(index.AgentsBucket); bucket != nil {
			v = bucket.Get([]byte(node))
		}
		if v == nil {
			return fmt.Errorf("%w: no agent of node %q in the log", entry.ErrNotFound, node)
		}
		var err error
		a, err = decodeAgent(node, v)
		return err
	})
	return a, err
}

// NodeCertificates returns the certificates issued to node (agent and
// workload SVIDs) that are neither revoked nor expired at now, as List
// summaries.
func (reg *Registry) NodeCertificates(ctx context.Context, node string, now time.Time) ([]entry.Entry, error) {
	f := index.Filter{Node: node, Kinds: []entry.Kind{entry.KindIssuance, entry.KindRenewal}}
	var out []entry.Entry
	token := ""
	for {
		page, next, err := reg.rv.Index.List(ctx, f, index.MaxPageSize, token)
		if err != nil {
			return nil, err
		}
		for _, e := range page {
			if e.Revoked == nil && e.NotAfter.After(now) && !reg.rv.Revocations.IsRevoked(e.Serial, now) {
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
func (reg *Registry) Ban(ctx context.Context, node, reason string) (BanResult, error) {
	if node == "" {
		return BanResult{}, fmt.Errorf("%w: node is required", entry.ErrInvalidArgument)
	}
	reg.rv.Mu.Lock()
	if b, ok := reg.Banned(node); ok {
		reg.rv.Mu.Unlock()
		return BanResult{}, fmt.Errorf("%w: node %s since %s (entry %d)", ErrAlreadyBanned, node,
			b.Time.UTC().Format(time.RFC3339), b.Index)
	}
	evs := []entry.Event{{Kind: entry.KindBan, Node: node, Reason: reason}}
	revs, err := reg.nodeRevocations(ctx, node, reason)
	if err != nil {
		reg.rv.Mu.Unlock()
		return BanResult{}, err
	}
	idx, err := reg.rv.Append(ctx, append(evs, revs...)...)
	reg.rv.Mu.Unlock()
	if err != nil {
		return BanResult{}, err
	}
	res := BanResult{Ban: Ban{Node: node, Index: idx[0], Reason: reason}}
	if b, ok := reg.Banned(node); ok {
		res.Ban = b
	}
	for _, r := range revs {
		res.Revoked = append(res.Revoked, r.Serial)
	}
	more, err := reg.RevokeNodeCertificates(ctx, node)
	return BanResult{Ban: res.Ban, Revoked: append(res.Revoked, more...)}, err
}

// nodeRevocations returns revocation events for node's unexpired,
// unrevoked certificates. revokeMu is held.
func (reg *Registry) nodeRevocations(ctx context.Context, node, reason string) ([]entry.Event, error) {
	certs, err := reg.NodeCertificates(ctx, node, reg.rv.Clock.Now())
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
func (reg *Registry) RevokeNodeCertificates(ctx context.Context, node string) ([]string, error) {
	reg.rv.Mu.Lock()
	defer reg.rv.Mu.Unlock()
	b, ok := reg.Banned(node)
	if !ok {
		return nil, nil
	}
	revs, err := reg.nodeRevocations(ctx, node, b.Reason)
	if err != nil || len(revs) == 0 {
		return nil, err
	}
	if _, err := reg.rv.Append(ctx, revs...); err != nil {
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
func (reg *Registry) Unban(ctx context.Context, node, reason string) (entry.Entry, error) {
	reg.rv.Mu.Lock()
	defer reg.rv.Mu.Unlock()
	if _, ok := reg.Banned(node); !ok {
		return entry.Entry{}, fmt.Errorf("%w: node %q", ErrNotBanned, node)
	}
	idx, err := reg.rv.Append(ctx, entry.Event{Kind: entry.KindUnban, Node: node, Reason: reason})
	if err != nil {
		return entry.Entry{}, err
	}
	return reg.rv.Index.Entry(ctx, idx[0])
}
