package index

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/store"
)

// The agent records. The index folds the events that concern a node's
// agent (its agent SVIDs, join-token uses, bans and unbans) into one
// record per node in the agents bucket.

// Buckets added after the first release; created by the indexer on first
// use, so older files gain them without a migration.
var (
	AgentsBucket = []byte("agents")    // node -> AgentRecord (JSON)
	ParentBucket = []byte("by_parent") // <parent serial> 0 <index> -> child serial
)

// agentPath is the path prefix of agent SVIDs (spiffe://<td>/castellan/agent/<node>).
const agentPath = "/castellan/agent/"

// AgentRecord is the stored record of a node's agent (ledger Agent).
type AgentRecord struct {
	SPIFFEID  string    `json:"spiffe_id,omitempty"`
	Serial    string    `json:"serial,omitempty"`
	NotAfter  time.Time `json:"not_after"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	Banned    bool      `json:"banned,omitempty"`
	BanIndex  uint64    `json:"ban_index,omitempty"`
	BanTime   time.Time `json:"ban_time"`
	BanReason string    `json:"ban_reason,omitempty"`
}

// agentUpdate is one event that changes a node's agent record.
type agentUpdate struct {
	idx uint64
	ev  entry.Event
}

// isAgentCert reports whether ev is an agent SVID issued to ev.Node:
// spiffe://<td>/castellan/agent/<ev.Node>.
func isAgentCert(ev *entry.Event) bool {
	if !ev.Kind.IsCertificate() || ev.Node == "" {
		return false
	}
	rest, ok := strings.CutPrefix(ev.SPIFFEID, "spiffe://")
	td, path, found := strings.Cut(rest, "/")
	return ok && found && td != "" && "/"+path == agentPath+ev.Node
}

// addAgent collects ev when it changes a node's agent record.
func (b *indexBatch) addAgent(idx uint64, ev *entry.Event) {
	switch {
	case isAgentCert(ev), ev.Node != "" && (ev.Kind == entry.KindJoinTokenUse || ev.Kind == entry.KindBan || ev.Kind == entry.KindUnban):
		e := *ev
		e.CertDER = nil
		b.agents = append(b.agents, agentUpdate{idx: idx, ev: e})
	}
}

// applyAgents folds the collected updates, in log order, into the stored
// agent records.
func (b *indexBatch) applyAgents(tx store.Tx) error {
	if len(b.agents) == 0 {
		return nil
	}
	bucket, err := tx.CreateBucketIfNotExists(AgentsBucket)
	if err != nil {
		return err
	}
	recs := map[string]*AgentRecord{}
	for _, u := range b.agents {
		rec, ok := recs[u.ev.Node]
		if !ok {
			rec = &AgentRecord{}
			if v := bucket.Get([]byte(u.ev.Node)); v != nil {
				if err := json.Unmarshal(v, rec); err != nil {
					return fmt.Errorf("agent record of node %s is damaged: %w", u.ev.Node, err)
				}
			}
			recs[u.ev.Node] = rec
		}
		rec.apply(u)
	}
	for _, n := range slices.Sorted(maps.Keys(recs)) {
		v, err := json.Marshal(recs[n])
		if err != nil {
			return err
		}
		if err := bucket.Put([]byte(n), v); err != nil {
			return err
		}
	}
	return nil
}

// apply folds one event into the record.
func (r *AgentRecord) apply(u agentUpdate) {
	ev := &u.ev
	switch ev.Kind {
	case entry.KindBan:
		r.Banned, r.BanIndex, r.BanTime, r.BanReason = true, u.idx, ev.Time, ev.Reason
		return
	case entry.KindUnban:
		r.Banned, r.BanIndex, r.BanTime, r.BanReason = false, 0, time.Time{}, ""
		return
	}
	if r.FirstSeen.IsZero() {
		r.FirstSeen = ev.Time
	}
	r.LastSeen = ev.Time
	if ev.Kind.IsCertificate() {
		r.SPIFFEID, r.Serial, r.NotAfter = ev.SPIFFEID, ev.Serial, ev.NotAfter
	}
}
