package main

import (
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/authn"
	"github.com/castellan-dev/castellan/ca/authority"
	"github.com/castellan-dev/castellan/ca/authz"
	"github.com/castellan-dev/castellan/ca/ledger"
	"github.com/castellan-dev/castellan/ca/server"
	"github.com/castellan-dev/castellan/ca/store/boltstore"
	"github.com/castellan-dev/castellan/cmd/castellanctl/internal/authoritycmd"
	"github.com/castellan-dev/castellan/internal/clock/clocktest"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// rotatingServer runs a real CA server whose authority keeps a journal in
// a bbolt file, with a clock the test moves, and returns its admin socket
// and the clock.
func rotatingServer(t *testing.T) (string, *atomic.Int64) {
	t.Helper()
	dir := t.TempDir()
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	journal, err := boltstore.Open(filepath.Join(dir, "authority.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { journal.Close() })
	auth, err := authority.Open(context.Background(), authority.Config{TrustDomain: td, DataDir: dir, Journal: journal,
		PublishDelay: time.Hour, Clock: clocktest.Func(clock)})
	if err != nil {
		t.Fatal(err)
	}
	l, err := ledger.Open(filepath.Join(dir, "ledger.db"), ledger.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	db, err := boltstore.Open(filepath.Join(dir, "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	tokens, err := authn.NewJoinTokens(context.Background(), db, authn.JoinTokensConfig{})
	if err != nil {
		t.Fatal(err)
	}
	entries, err := authz.NewEntries(context.Background(), db, td, authz.EntriesConfig{MaxTTL: auth.MaxTTL()})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(context.Background(), server.Config{Authority: auth, Ledger: l, Clock: clocktest.Func(clock),
		Attestor: &authn.JoinTokenAttestor{Tokens: tokens}, Tokens: tokens, Entries: entries})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "admin.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	g := srv.AdminGRPCServer()
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	return sock, &now
}

// authorities lists the authorities as JSON.
func authorities(t *testing.T, sock string) []authoritycmd.AuthorityJSON {
	t.Helper()
	var list []authoritycmd.AuthorityJSON
	code, out, errs := ctl(t, sock, "authority", "list", "-o", "json")
	if code != 0 || json.Unmarshal([]byte(out), &list) != nil {
		t.Fatalf("authority list: exit %d %s %s", code, out, errs)
	}
	return list
}

func TestAuthorityRotationThroughCastellanctl(t *testing.T) {
	sock, now := rotatingServer(t)
	list := authorities(t, sock)
	if len(list) != 1 || list[0].State != "active" || list[0].Source != "managed" || list[0].Root.SHA256 == "" {
		t.Fatalf("fresh CA: %+v, want one active managed authority", list)
	}
	first := list[0]

	// Intermediate rotation: same root, activatable once that root has
	// been in the bundle for the publish delay (it entered at bootstrap).
	now.Add(int64(time.Hour + time.Second))
	var prepared authoritycmd.AuthorityJSON
	code, out, errs := ctl(t, sock, "authority", "prepare", "-o", "json")
	if code != 0 || json.Unmarshal([]byte(out), &prepared) != nil || prepared.State != "prepared" ||
		prepared.Root.SHA256 != first.Root.SHA256 || prepared.ID == first.ID {
		t.Fatalf("prepare: exit %d %s %s", code, out, errs)
	}
	if code, out, errs := ctl(t, sock, "authority", "activate", prepared.ID); code != 0 || !strings.Contains(out, "State:") || !strings.Contains(out, "active") {
		t.Fatalf("activate: exit %d %s %s", code, out, errs)
	}

	// Root rotation: refused before the publish delay, with the reason.
	code, out, errs = ctl(t, sock, "authority", "prepare", "--new-root", "-o", "json")
	var rooted authoritycmd.AuthorityJSON
	if code != 0 || json.Unmarshal([]byte(out), &rooted) != nil || rooted.Root.SHA256 == first.Root.SHA256 || rooted.ActivatableAt == nil {
		t.Fatalf("prepare --new-root: exit %d %s %s", code, out, errs)
	}
	if code, _, errs := ctl(t, sock, "authority", "prepare"); code != 4 || !strings.Contains(errs, "already prepared") {
		t.Fatalf("second prepare: exit %d %s, want %d and 'already prepared'", code, errs, 4)
	}
	code, _, errs = ctl(t, sock, "authority", "activate", rooted.ID)
	if code != 4 || !strings.Contains(errs, "authority activate refused") || !strings.Contains(errs, "less than the publish delay") {
		t.Fatalf("early activate: exit %d %s, want %d with the publish-delay explanation", code, errs, 4)
	}
	now.Add(int64(time.Hour + time.Second))
	if code, _, errs := ctl(t, sock, "authority", "activate", rooted.ID); code != 0 {
		t.Fatalf("activate after the delay: exit %d %s", code, errs)
	}

	// Taint and revoke of the old authorities; refusals for the active one.
	if code, _, errs := ctl(t, sock, "authority", "taint", rooted.ID); code != 4 || !strings.Contains(errs, "is active") {
		t.Fatalf("taint of the active authority: exit %d %s", code, errs)
	}
	if code, out, errs := ctl(t, sock, "authority", "taint", prepared.ID, "-o", "json"); code != 0 || !strings.Contains(out, `"state": "tainted"`) {
		t.Fatalf("taint: exit %d %s %s", code, out, errs)
	}
	if code, _, errs := ctl(t, sock, "authority", "revoke", prepared.ID); code != 4 || !strings.Contains(errs, "may have signed leaves") {
		t.Fatalf("revoke with live leaves: exit %d %s", code, errs)
	}
	if code, _, errs := ctl(t, sock, "authority", "revoke", prepared.ID, "--force"); code != 0 {
		t.Fatalf("revoke --force: exit %d %s", code, errs)
	}
	if code, _, errs := ctl(t, sock, "authority", "revoke", "no-such-id"); code != 1 || !strings.Contains(errs, "NotFound") {
		t.Fatalf("revoke of an unknown ID: exit %d %s", code, errs)
	}
	code, out, _ = ctl(t, sock, "authority", "list")
	for _, want := range []string{"ID", "STATE", first.ID, "old", "revoked", rooted.ID, "active"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("authority list table lacks %q:\n%s", want, out)
		}
	}
	states := map[string]string{}
	for _, a := range authorities(t, sock) {
		states[a.ID] = a.State
	}
	if states[first.ID] != "old" || states[prepared.ID] != "revoked" || states[rooted.ID] != "active" {
		t.Fatalf("states after the rotations: %v", states)
	}
}

func TestAuthorityUsageErrors(t *testing.T) {
	sock, _ := rotatingServer(t)
	for _, args := range [][]string{
		{"authority"},
		{"authority", "promote"},
		{"authority", "activate"},
		{"authority", "activate", "a", "b"},
		{"authority", "list", "-o", "yaml"},
		{"authority", "taint", "x", "--force"},
		{"authority", "prepare", "extra"},
	} {
		if code, _, errs := ctl(t, sock, args...); code != 2 {
			t.Errorf("%q: exit %d (%s), want 2", args, code, errs)
		}
	}
	if code, _, errs := ctl(t, sock, "authority", "activate", ""); code != 1 || !strings.Contains(errs, "InvalidArgument") {
		t.Errorf("empty ID: exit %d %s, want InvalidArgument", code, errs)
	}
}

func TestAuthorityListOnFixedCAIsRefused(t *testing.T) {
	sock, _ := adminServer(t)
	code, _, errs := ctl(t, sock, "authority", "list")
	if code != 4 || !strings.Contains(errs, "without an authority journal") {
		t.Fatalf("list on a CA without journal: exit %d %s", code, errs)
	}
	if code, _, errs := ctl(t, sock, "authority", "prepare"); code != 4 || !strings.Contains(errs, "no authority journal") {
		t.Fatalf("prepare on a CA without journal: exit %d %s", code, errs)
	}
}
