package storm

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/ca/authn"
	"github.com/castellan-dev/castellan/ca/authz"
	"github.com/castellan-dev/castellan/ca/store/boltstore"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	bolt "go.etcd.io/bbolt"
)

// nodeSpec is what the CA's registry holds for one simulated agent: its
// join token and its registration entries (ID -> SPIFFE ID).
type nodeSpec struct {
	name    string
	token   string
	entries []entrySpec
}

type entrySpec struct {
	id       string
	spiffeID spiffeid.ID
}

// writeRegistry creates, in the server's registry file (registry.db in
// dataDir, before the server starts), one join token per agent and
// perAgent registration entries for each, through ca/authn and ca/authz as
// castellanctl would through the admin API. Only the setup skips the
// fsync of each write (bbolt's NoSync): 100,000 entries created one
// durable transaction at a time would take minutes; the file is synced
// before it is closed.
func writeRegistry(ctx context.Context, dataDir string, td spiffeid.TrustDomain, agents, perAgent int) ([]nodeSpec, error) {
	db, err := bolt.Open(filepath.Join(dataDir, "registry.db"), 0o600, &bolt.Options{Timeout: time.Second, NoSync: true})
	if err != nil {
		return nil, fmt.Errorf("storm: registry: %w", err)
	}
	defer db.Close()
	reg := boltstore.New(db)
	tokens, err := authn.NewJoinTokens(ctx, reg, authn.JoinTokensConfig{})
	if err != nil {
		return nil, err
	}
	entries, err := authz.NewEntries(ctx, reg, td, authz.EntriesConfig{})
	if err != nil {
		return nil, err
	}
	defer entries.Close()
	nodes := make([]nodeSpec, agents)
	for a := range nodes {
		n := &nodes[a]
		n.name = fmt.Sprintf("storm-node-%03d", a)
		if n.token, _, err = tokens.Create(ctx, n.name, time.Hour); err != nil {
			return nil, err
		}
		for w := range perAgent {
			id := spiffeid.RequireFromPathf(td, "/ns/storm-%03d/sa/workload-%04d", a, w)
			ent, err := entries.Create(ctx, &cav1.Entry{SpiffeId: id.String(), Node: n.name,
				Selectors: []*cav1.Selector{{Type: "unix", Value: fmt.Sprintf("uid:%d", 10000+w)}}})
			if err != nil {
				return nil, fmt.Errorf("storm: create entry: %w", err)
			}
			n.entries = append(n.entries, entrySpec{id: ent.GetId(), spiffeID: id})
		}
	}
	if err := db.Sync(); err != nil {
		return nil, fmt.Errorf("storm: sync registry: %w", err)
	}
	return nodes, nil
}
