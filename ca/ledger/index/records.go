package index

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"github.com/castellan-dev/castellan/ca/ledger/agentrec"
	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/store"
)

// The agent records. The index folds the events that concern a node's
// agent (its agent SVIDs, join-token uses, bans and unbans) into one
// record per node in the agents bucket.

// Buckets added after the first release; created by the indexer on first
// use, so older files gain them without a migration.
var (
	AgentsBucket = []byte("agents")    // node -> agentrec.Record (JSON)
	ParentBucket = []byte("by_parent") // <parent serial> 0 <index> -> child serial
)

// agentUpdate is one event that changes a node's agent record.
type agentUpdate struct {
	idx uint64
	ev  entry.Event
}

// addAgent collects ev when it changes a node's agent record.
func (b *indexBatch) addAgent(idx uint64, ev *entry.Event) {
	if agentrec.Concerns(ev) {
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
	recs := map[string]*agentrec.Record{}
	for _, u := range b.agents {
		rec, ok := recs[u.ev.Node]
		if !ok {
			rec = &agentrec.Record{}
			if v := bucket.Get([]byte(u.ev.Node)); v != nil {
				if err := json.Unmarshal(v, rec); err != nil {
					return fmt.Errorf("agent record of node %s is damaged: %w", u.ev.Node, err)
				}
			}
			recs[u.ev.Node] = rec
		}
		rec.Apply(u.idx, &u.ev)
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
