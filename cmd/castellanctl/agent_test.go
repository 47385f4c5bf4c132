package main

import (
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/audit"
	"github.com/castellan-dev/castellan/ca/authn"
	"github.com/castellan-dev/castellan/ca/authority"
	"github.com/castellan-dev/castellan/ca/authz"
	"github.com/castellan-dev/castellan/ca/ledger"
	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/server"
	"github.com/castellan-dev/castellan/ca/store/boltstore"
	"github.com/castellan-dev/castellan/cmd/castellanctl/internal/agentcmd"
	"github.com/castellan-dev/castellan/cmd/castellanctl/internal/certscmd"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// adminServer runs a real CA server's admin and audit services on an
// admin socket and returns the socket and the server's ledger.
func adminServer(t *testing.T) (string, *ledger.Ledger) {
	t.Helper()
	dir := t.TempDir()
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	auth, err := authority.New(authority.Config{TrustDomain: td})
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
	srv, err := server.New(context.Background(), server.Config{Authority: auth, Ledger: l,
		Attestor: &authn.JoinTokenAttestor{Tokens: tokens}, Tokens: tokens, Entries: entries})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "admin.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	g := srv.AdminGRPCServer(audit.NewService(l, audit.Config{Authorizer: audit.AdminAuthorizer()}).Register)
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	return sock, l
}

// record appends a certificate of id issued to node, renewed from parent.
func record(t *testing.T, l *ledger.Ledger, serial, id, node, parent string) {
	t.Helper()
	if _, err := l.Append(context.Background(), entry.Event{Kind: entry.KindIssuance, Serial: serial, SPIFFEID: id,
		Node: node, Parent: parent, NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		CertDER: []byte("der")}); err != nil {
		t.Fatal(err)
	}
}

func TestAgentBanAndUnban(t *testing.T) {
	sock, l := adminServer(t)
	if _, err := l.Append(context.Background(), entry.Event{Kind: entry.KindJoinTokenUse, Node: "node-a",
		SPIFFEID: "spiffe://cluster.local/castellan/agent/node-a"}); err != nil {
		t.Fatal(err)
	}
	record(t, l, "a1", "spiffe://cluster.local/castellan/agent/node-a", "node-a", "")
	record(t, l, "a2", "spiffe://cluster.local/castellan/agent/node-a", "node-a", "a1")
	record(t, l, "b1", "spiffe://cluster.local/ns/it/sa/app", "node-a", "")
	record(t, l, "c1", "spiffe://cluster.local/castellan/agent/node-b", "node-b", "")

	var list []agentcmd.AgentJSON
	code, out, errs := ctl(t, sock, "agent", "list", "-o", "json")
	if code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list) != 2 {
		t.Fatalf("agent list: exit %d %s %s", code, out, errs)
	}
	if a := list[0]; a.Node != "node-a" || a.Serial != "a2" || a.Banned || a.FirstSeen == nil || a.LastSeen == nil {
		t.Fatalf("agent list[0] = %+v, want node-a with current serial a2, not banned", a)
	}

	if code, _, errs := ctl(t, sock, "agent", "ban", "node-a"); code != 2 || !strings.Contains(errs, "--reason is required") {
		t.Fatalf("ban without a reason: exit %d %s", code, errs)
	}
	code, out, errs = ctl(t, sock, "agent", "ban", "node-a", "--reason", "agent key stolen", "-o", "json")
	var banned struct {
		agentcmd.AgentJSON
		Revoked []string `json:"revoked_serials"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &banned) != nil {
		t.Fatalf("agent ban: exit %d %s %s", code, out, errs)
	}
	if !banned.Banned || banned.BanReason != "agent key stolen" || banned.BanIndex == nil || len(banned.Revoked) != 3 {
		t.Fatalf("agent ban -o json = %+v, want banned with a1, a2, b1 revoked", banned)
	}
	for _, s := range []string{"a1", "a2", "b1"} {
		if !l.IsRevoked(s, time.Now()) {
			t.Errorf("%s not revoked by the ban", s)
		}
	}
	if l.IsRevoked("c1", time.Now()) {
		t.Error("node-b's certificate revoked by node-a's ban")
	}
	code, out, _ = ctl(t, sock, "agent", "list")
	if code != 0 || !strings.Contains(out, "BANNED (agent key stolen)") || strings.Count(out, "active") != 1 {
		t.Fatalf("agent list table:\n%s", out)
	}
	if code, _, errs := ctl(t, sock, "agent", "ban", "node-a", "--reason", "again"); code != 1 || !strings.Contains(errs, "AlreadyExists") {
		t.Fatalf("second ban: exit %d %s", code, errs)
	}
	code, out, _ = ctl(t, sock, "agent", "show", "node-a")
	if code != 0 || !strings.Contains(out, "BANNED") || !strings.Contains(out, "ledger index") {
		t.Fatalf("agent show:\n%s", out)
	}
	if code, _, errs := ctl(t, sock, "agent", "show", "node-z"); code != 1 || !strings.Contains(errs, "NotFound") {
		t.Fatalf("show of an unknown node: exit %d %s", code, errs)
	}
	if code, out, errs := ctl(t, sock, "agent", "unban", "node-a", "--reason", "re-imaged"); code != 0 || !strings.Contains(out, "unbanned node node-a") {
		t.Fatalf("unban: exit %d %s %s", code, out, errs)
	}
	if _, ok := l.Banned("node-a"); ok || !l.IsRevoked("a2", time.Now()) {
		t.Fatal("after unban: still banned, or the revoked certificates were restored")
	}
	if code, _, errs := ctl(t, sock, "agent", "unban", "node-a", "--reason", "again"); code != 1 || !strings.Contains(errs, "FailedPrecondition") {
		t.Fatalf("second unban: exit %d %s", code, errs)
	}
	if code, out, _ := ctl(t, sock, "agent", "-h"); code != 0 || !strings.Contains(out, "past and future") {
		t.Fatalf("agent -h: exit %d\n%s", code, out)
	}
}

func TestCertsLineageAndRevokeWithDescendants(t *testing.T) {
	sock, l := adminServer(t)
	const id = "spiffe://cluster.local/castellan/agent/node-a"
	record(t, l, "a1", id, "node-a", "")
	record(t, l, "a2", id, "node-a", "a1")
	record(t, l, "a3", id, "node-a", "a2")
	record(t, l, "a4", id, "node-a", "a3")
	record(t, l, "b1", id, "node-a", "a2") // a second renewal of a2 (a stolen copy)

	var shown certscmd.CertShowJSON
	code, out, errs := ctl(t, sock, "certs", "show", "a2", "-o", "json")
	if code != 0 || json.Unmarshal([]byte(out), &shown) != nil {
		t.Fatalf("certs show: exit %d %s %s", code, out, errs)
	}
	serials := func(cs []certscmd.CertJSON) (s []string) {
		for _, c := range cs {
			s = append(s, c.Serial)
		}
		return s
	}
	if shown.ParentSerial != "a1" || strings.Join(serials(shown.Ancestors), ",") != "a1" ||
		strings.Join(serials(shown.Descendants), ",") != "a3,b1,a4" {
		t.Fatalf("certs show a2: parent %q ancestors %v descendants %v", shown.ParentSerial, serials(shown.Ancestors), serials(shown.Descendants))
	}
	code, out, _ = ctl(t, sock, "certs", "show", "a3")
	if code != 0 || !strings.Contains(out, "Renewed from:") || !strings.Contains(out, "ancestor -2") || !strings.Contains(out, "descendant") {
		t.Fatalf("certs show table:\n%s", out)
	}

	size := l.Size()
	code, out, errs = ctl(t, sock, "certs", "revoke", "a2", "--reason", "keyCompromise", "--with-descendants", "-o", "json")
	var revs struct {
		Revocations []struct {
			Serial      string `json:"serial"`
			LedgerIndex uint64 `json:"ledger_index"`
		} `json:"revocations"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &revs) != nil || len(revs.Revocations) != 4 {
		t.Fatalf("revoke --with-descendants: exit %d %s %s", code, out, errs)
	}
	// One append: the four revocations are consecutive entries.
	for i, r := range revs.Revocations {
		if r.LedgerIndex != size+uint64(i) {
			t.Errorf("revocation %d (%s) at index %d, want %d", i, r.Serial, r.LedgerIndex, size+uint64(i))
		}
	}
	for _, s := range []string{"a2", "a3", "a4", "b1"} {
		if !l.IsRevoked(s, time.Now()) {
			t.Errorf("%s not revoked", s)
		}
	}
	if l.IsRevoked("a1", time.Now()) {
		t.Error("the ancestor a1 was revoked")
	}
	if code, _, errs := ctl(t, sock, "certs", "revoke", "a2", "--reason", "again", "--with-descendants"); code != 1 || !strings.Contains(errs, "AlreadyExists") {
		t.Fatalf("second revoke: exit %d %s", code, errs)
	}
}
