package authn

import (
	"context"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/store/pgstore"
	"github.com/castellan-dev/castellan/internal/pgtest"
)

// TestJoinTokenConsumedOnceAcrossPostgresReplicas: a token created
// through replica A and used at once through A and B, each with its own
// connection to one PostgreSQL database, is accepted exactly once.
func TestJoinTokenConsumedOnceAcrossPostgresReplicas(t *testing.T) {
	dsn := pgtest.Start(t).NewDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var reps [2]*JoinTokens
	for i := range reps {
		conn, err := pgstore.Connect(ctx, dsn, pgstore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(conn.Close)
		db, err := conn.Keyspace(ctx, "registry")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		if reps[i], err = NewJoinTokens(ctx, db, JoinTokensConfig{}); err != nil {
			t.Fatal(err)
		}
	}
	for round := range 5 {
		tok, _, err := reps[0].Create(ctx, "node-a", 0)
		if err != nil {
			t.Fatal(err)
		}
		const n = 8
		results := make(chan error, n)
		start := make(chan struct{})
		for i := range n {
			go func() {
				<-start
				_, err := reps[i%2].Consume(ctx, tok)
				results <- err
			}()
		}
		close(start)
		won := 0
		for range n {
			if err := <-results; err == nil {
				won++
			} else if reasonOf(t, err) != ReasonJoinTokenUsed {
				t.Errorf("round %d: loser: %v, want join_token_used", round, err)
			}
		}
		if won != 1 {
			t.Fatalf("round %d: %d uses accepted across two replicas, want 1", round, won)
		}
	}
}
