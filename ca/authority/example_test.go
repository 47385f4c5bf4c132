package authority_test

import (
	"context"
	"log"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/castellan-dev/castellan/ca/authority"
	"github.com/castellan-dev/castellan/ca/authority/journal"
	"github.com/castellan-dev/castellan/ca/store/boltstore"
)

// ExampleOpen shows how a server runs a rotating CA: the journal in the
// CA's store, every transition recorded before it commits, the rotation
// step on a ticker, and the bundle republished on every change.
func ExampleOpen() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dataDir := "/var/lib/castellan"
	db, err := boltstore.Open(filepath.Join(dataDir, "authority.db"))
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	auth, err := authority.Open(ctx, authority.Config{
		TrustDomain: spiffeid.RequireTrustDomainFromString("cluster.local"),
		DataDir:     dataDir, // the KEK is generated here for an unshared store
		Journal:     db,
		OnTransition: func(ctx context.Context, tr journal.Transition) error {
			log.Printf("ledger: authority %s %s -> %s (%s)", tr.Authority.ID, tr.From, tr.To, tr.Reason)
			return nil // the server appends a ledger event; an error aborts the transition
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	ticker := time.NewTicker(5 * time.Second)
	defer ticker.Stop()
	go func() { _ = auth.Run(ctx, ticker.C) }()
	for {
		changed := auth.Changed()
		s := auth.Snapshot()
		log.Printf("publish %d roots; sign with %s; replace leaves under %d tainted", len(s.Roots), s.ActiveID, len(s.Tainted))
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}
