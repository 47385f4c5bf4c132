package authz

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/ca/refusal"
	"github.com/castellan-dev/castellan/ca/store/boltstore"
	"go.etcd.io/bbolt"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

func TestUnixEntriesMustNameTheUser(t *testing.T) {
	ctx := context.Background()
	const id = "spiffe://cluster.local/ns/default/sa/app"
	for _, tc := range []struct {
		name    string
		sels    []string
		anyUser bool
		refused string // "" when stored
	}{
		{"path only", []string{"unix:path:/usr/bin/app"}, false, "Add --selector unix:uid:N"},
		{"sha256 only", []string{"unix:sha256:" + strings.Repeat("ab", 32)}, false, "or pass --allow-any-user"},
		{"path and sha256", []string{"unix:path:/usr/bin/app", "unix:sha256:" + strings.Repeat("ab", 32)}, false, "no unix:uid or unix:gid"},
		{"path with a k8s selector", []string{"unix:path:/usr/bin/app", "k8s:ns:default"}, false, "no unix:uid or unix:gid"},
		{"uid alone", []string{"unix:uid:1000"}, false, ""},
		{"gid alone", []string{"unix:gid:1000"}, false, ""},
		{"path and uid", []string{"unix:path:/usr/bin/app", "unix:uid:1000"}, false, ""},
		{"path and gid", []string{"unix:path:/usr/bin/app", "unix:gid:1000"}, false, ""},
		{"k8s only", []string{"k8s:ns:default", "k8s:sa:app"}, false, ""},
		{"path only, opted in", []string{"unix:path:/usr/bin/app"}, true, ""},
		{"opt-in with a uid", []string{"unix:path:/usr/bin/app", "unix:uid:1000"}, true, "drop --allow-any-user"},
		{"opt-in without unix selectors", []string{"k8s:ns:default"}, true, "drop --allow-any-user"},
		// A uid-looking value under another type is not a uid selector.
		{"uid under another type", []string{"unix:path:/usr/bin/app", "other:uid:1000"}, false, "no unix:uid"},
	} {
		e := newEntries(t)
		ent := entry(id, "n", tc.sels...)
		ent.AllowAnyUser = tc.anyUser
		got, err := e.Create(ctx, ent)
		if tc.refused == "" {
			if err != nil || got.GetAllowAnyUser() != tc.anyUser {
				t.Errorf("%s: %v, %v; want stored with allow_any_user=%v", tc.name, got, err, tc.anyUser)
			}
			continue
		}
		if !isInvalidEntry(err) || status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.refused) {
			t.Errorf("%s: %v; want InvalidArgument containing %q", tc.name, err, tc.refused)
		}
		if len(e.List("")) != 0 {
			t.Errorf("%s: the refused entry was stored", tc.name)
		}
	}
}

// TestLegacyAnyUserEntryIsFlaggedOnLoad: an entry stored before the rule
// keeps working but is listed (and sent to agents) as open to any user.
func TestLegacyAnyUserEntryIsFlaggedOnLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registry.db")
	raw, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	legacy := &cav1.Entry{Id: "old", SpiffeId: "spiffe://cluster.local/a", Node: "n",
		Selectors: []*cav1.Selector{{Type: "unix", Value: "path:/usr/bin/app"}}}
	bound := &cav1.Entry{Id: "bound", SpiffeId: "spiffe://cluster.local/b", Node: "n",
		Selectors: []*cav1.Selector{{Type: "unix", Value: "path:/usr/bin/app"}, {Type: "unix", Value: "uid:7"}}}
	err = raw.Update(func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(entryBucket)
		if err != nil {
			return err
		}
		for _, ent := range []*cav1.Entry{legacy, bound} {
			v, err := proto.Marshal(ent)
			if err != nil {
				return err
			}
			if err := b.Put([]byte(ent.Id), v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := raw.Close(); err != nil {
		t.Fatal(err)
	}
	// The file written by the bbolt-only code loads through the store.
	db, err := boltstore.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	e, err := NewEntries(context.Background(), db, td, EntriesConfig{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, ent := range e.List("n") {
		got[ent.Id] = ent.AllowAnyUser
	}
	if len(got) != 2 || !got["old"] || got["bound"] {
		t.Fatalf("loaded allow_any_user by entry: %v; want old=true, bound=false", got)
	}
}

// isInvalidEntry reports whether err refuses an entry that cannot be stored.
func isInvalidEntry(err error) bool {
	e, ok := refusal.As(err)
	return ok && e.Reason == ReasonInvalidEntry && e.Code == codes.InvalidArgument
}
