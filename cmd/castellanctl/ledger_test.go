package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/audit"
	"github.com/castellan-dev/castellan/ca/ledger"
	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/cmd/castellanctl/internal/certscmd"
	"github.com/castellan-dev/castellan/cmd/castellanctl/internal/ledgercmd"
	"github.com/castellan-dev/castellan/cmd/castellanctl/internal/verifycmd"
	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/grpc"
)

// auditServer serves the ledger file at path on an admin-style Unix socket
// and returns the socket path; stop closes everything.
func auditServer(t *testing.T, path string) (sock string, l *ledger.Ledger, stop func()) {
	t.Helper()
	return auditServerWith(t, path, ledger.Config{})
}

// auditServerWith is auditServer with ledger options.
func auditServerWith(t *testing.T, path string, opts ledger.Config) (sock string, l *ledger.Ledger, stop func()) {
	t.Helper()
	l, err := ledger.Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	sock = filepath.Join(t.TempDir(), "admin.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	audit.NewService(l, audit.Config{Authorizer: audit.AdminAuthorizer()}).Register(g)
	go g.Serve(lis)
	var stopped bool
	stop = func() {
		if !stopped {
			stopped = true
			g.Stop()
			l.Close()
		}
	}
	t.Cleanup(stop)
	return sock, l, stop
}

func issue(t *testing.T, l *ledger.Ledger, from, n int, node string) {
	t.Helper()
	evs := make([]entry.Event, n)
	for i := range evs {
		evs[i] = entry.Event{
			Kind: entry.KindIssuance, Serial: fmt.Sprintf("%x", 0xc000+from+i),
			SPIFFEID: fmt.Sprintf("spiffe://cluster.local/ns/bookinfo/sa/svc%d", (from+i)%3), Node: node,
			NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), CertDER: []byte("der"),
		}
	}
	if _, err := l.Append(context.Background(), evs...); err != nil {
		t.Fatal(err)
	}
}

// ctl runs castellanctl against sock and returns exit code, stdout, stderr.
func ctl(t *testing.T, sock string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	code := run(ctx, append([]string{"--admin-socket", sock}, args...), func(string) string { return "" }, &out, &errb)
	return code, out.String(), errb.String()
}

func TestLedgerVerifyUntouchedLog(t *testing.T) {
	sock, l, _ := auditServer(t, filepath.Join(t.TempDir(), "ledger.db"))
	issue(t, l, 0, 300, "node-1")
	code, out, errs := ctl(t, sock, "ledger", "verify")
	if code != 0 || !strings.Contains(out, "OK: 300 entries") {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
	code, out, _ = ctl(t, sock, "ledger", "verify", "-o", "json", "--log-key", l.VerifierKey())
	var res verifycmd.Result
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != 0 || !res.OK || res.Entries != 300 {
		t.Fatalf("exit %d, %+v, %v", code, res, err)
	}
}

// TestLedgerVerifyExitCodes: a log that does not verify exits 3 (the
// VerificationError's ExitCode), apart from other failures (1) and usage
// errors (2), so scripts can tell tampering from an unreachable server.
func TestLedgerVerifyExitCodes(t *testing.T) {
	dir := t.TempDir()
	sock, l, _ := auditServer(t, filepath.Join(dir, "ledger.db"))
	issue(t, l, 0, 10, "node-1")
	// A checkpoint that the pinned key does not open: exit 3.
	other := filepath.Join(dir, "other.db")
	_, l2, _ := auditServer(t, other)
	code, _, errs := ctl(t, sock, "ledger", "verify", "--log-key", l2.VerifierKey())
	if code != 3 || !strings.Contains(errs, "does not verify with log key") || !strings.Contains(errs, "verification FAILED") {
		t.Fatalf("wrong pinned key: exit %d, want 3\n%s", code, errs)
	}
	// The server unreachable: 1, not 3.
	if code, _, errs := ctl(t, filepath.Join(dir, "nothing.sock"), "ledger", "verify"); code != 1 {
		t.Fatalf("no server: exit %d, want 1\n%s", code, errs)
	}
	// A usage error stays 2.
	if code, _, _ := ctl(t, sock, "ledger", "verify", "extra"); code != 2 {
		t.Fatalf("usage error: exit %d, want 2", code)
	}
}

// tampered builds a ledger file, closes it, applies edit and serves it.
func tampered(t *testing.T, edit func(tx *bolt.Tx) error) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ledger.db")
	sock, l, stop := auditServer(t, path)
	issue(t, l, 0, 200, "node-1")
	if code, _, errs := ctl(t, sock, "ledger", "checkpoint"); code != 0 {
		t.Fatal(errs)
	}
	stop()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(edit); err != nil {
		t.Fatal(err)
	}
	db.Close()
	// A tampered ledger no longer opens for issuance; the operator serves
	// it read-only for forensics (--ledger-read-only-forensics) and audits.
	if _, err := ledger.Open(path, ledger.Config{}); !errors.Is(err, entry.ErrDamaged) {
		t.Fatalf("the tampered ledger opened for issuance: %v", err)
	}
	sock, _, _ = auditServerWith(t, path, ledger.Config{ReadOnly: true})
	return sock
}

func TestLedgerVerifyCatchesFlippedByte(t *testing.T) {
	sock := tampered(t, func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("entries"))
		key := []byte{0, 0, 0, 0, 0, 0, 0, 77}
		v := append([]byte(nil), b.Get(key)...)
		i := bytes.Index(v, []byte("node-1"))
		v[i+5] = '7'
		return b.Put(key, v)
	})
	code, out, _ := ctl(t, sock, "ledger", "verify")
	if code != 3 || !strings.Contains(out, "entry 77 does not hash to its stored leaf") ||
		!strings.Contains(out, "do not hash to the root in checkpoint 200") {
		t.Fatalf("exit %d\n%s", code, out)
	}
}

func TestLedgerVerifyOfflineFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	sock, l, stop := auditServer(t, path)
	issue(t, l, 0, 64, "node-1")
	if code, _, errs := ctl(t, sock, "ledger", "checkpoint"); code != 0 {
		t.Fatal(errs)
	}
	vkey := l.VerifierKey()
	stop()
	if code, out, errs := ctl(t, sock, "ledger", "verify", "--db", path, "--log-key", vkey); code != 0 || !strings.Contains(out, "OK: 64 entries") {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("entries")).Delete([]byte{0, 0, 0, 0, 0, 0, 0, 9}) })
	db.Close()
	if code, out, _ := ctl(t, sock, "ledger", "verify", "--db", path, "--log-key", vkey); code != 3 || !strings.Contains(out, "entry 9 is missing") {
		t.Fatalf("exit %d\n%s", code, out)
	}
	if code, _, _ := ctl(t, sock, "ledger", "verify", "--db", path); code != 2 {
		t.Fatalf("--db without --log-key: exit %d, want 2", code)
	}
}

// A ledger file with damaged pages (a bad disk, a bad copy) is a failed
// verification (exit 3) naming the file, never a bbolt panic (which used
// to exit 2, the usage-error status).
func TestLedgerVerifyOfflineDamagedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	sock, l, stop := auditServer(t, path)
	for i := 0; i < 2000; i += 500 {
		issue(t, l, i, 500, "node-1")
	}
	if code, _, errs := ctl(t, sock, "ledger", "checkpoint"); code != 0 {
		t.Fatal(errs)
	}
	vkey := l.VerifierKey()
	stop()
	// Damage pages in the middle of those in use (bbolt grows the file
	// ahead of its data: the middle of the file may be unused).
	used := 0
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	err = db.View(func(tx *bolt.Tx) error { used = int(tx.Size()); return nil })
	db.Close()
	if err != nil || used < 100_000 {
		t.Fatalf("the ledger uses %d bytes (%v); want a file of 2,000 entries", used, err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ps := int(binary.LittleEndian.Uint32(data[16+8:]))
	for p := used / ps / 2; p < used/ps/2+8; p++ {
		copy(data[p*ps+16:], bytes.Repeat([]byte{0xde, 0xad, 0xbe, 0xef}, 16))
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errs := ctl(t, sock, "ledger", "verify", "--db", path, "--log-key", vkey)
	if code != 3 || !strings.Contains(out, path) || !strings.Contains(out, "is damaged") || !strings.Contains(out, "restore the file from a backup") {
		t.Fatalf("exit %d, want 3 naming the damaged file\n%s%s", code, out, errs)
	}
	code, out, _ = ctl(t, sock, "ledger", "verify", "--db", path, "--log-key", vkey, "-o", "json")
	if code != 3 || !strings.Contains(out, `"ok": false`) {
		t.Fatalf("-o json: exit %d\n%s", code, out)
	}
}

func TestLedgerVerifyCatchesDeletedEntry(t *testing.T) {
	sock := tampered(t, func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("entries")).Delete([]byte{0, 0, 0, 0, 0, 0, 0, 150})
	})
	code, out, _ := ctl(t, sock, "ledger", "verify")
	if code != 3 || !strings.Contains(out, "entry 150 is missing") {
		t.Fatalf("exit %d\n%s", code, out)
	}
}

func TestLedgerVerifySinceCatchesRewrittenHistory(t *testing.T) {
	dir := t.TempDir()
	orig := filepath.Join(dir, "orig.db")
	sock, l, stop := auditServer(t, orig)
	issue(t, l, 0, 100, "node-1")
	saved := filepath.Join(dir, "old.checkpoint")
	if code, _, errs := ctl(t, sock, "ledger", "checkpoint", "--save", saved); code != 0 {
		t.Fatal(errs)
	}
	stop()

	// The operator, who holds the log key, rebuilds the log with entry 40
	// issued to another node and signs a fresh, self-consistent checkpoint.
	forged := filepath.Join(dir, "forged.db")
	key, err := os.ReadFile(orig + ".key")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(forged+".key", key, 0o600); err != nil {
		t.Fatal(err)
	}
	sock, l, _ = auditServer(t, forged)
	issue(t, l, 0, 40, "node-1")
	issue(t, l, 40, 1, "node-evil")
	issue(t, l, 41, 70, "node-1")

	if code, out, errs := ctl(t, sock, "ledger", "verify"); code != 0 {
		t.Fatalf("the forged log is self-consistent, verify alone passes: exit %d\n%s%s", code, out, errs)
	}
	code, out, _ := ctl(t, sock, "ledger", "verify", "--since", saved)
	if code != 3 || !strings.Contains(out, "consistency proof failed") ||
		!strings.Contains(out, "the first 100 entries do not hash to the root in checkpoint 100") {
		t.Fatalf("exit %d\n%s", code, out)
	}
}

func TestLedgerVerifySinceAcceptsGrownLog(t *testing.T) {
	dir := t.TempDir()
	sock, l, _ := auditServer(t, filepath.Join(dir, "ledger.db"))
	issue(t, l, 0, 50, "node-1")
	saved := filepath.Join(dir, "old.checkpoint")
	if code, _, errs := ctl(t, sock, "ledger", "checkpoint", "--save", saved); code != 0 {
		t.Fatal(errs)
	}
	issue(t, l, 50, 77, "node-2")
	code, out, errs := ctl(t, sock, "ledger", "verify", "--since", saved)
	if code != 0 || !strings.Contains(out, "consistent with saved checkpoint 50") {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
}

func TestLedgerProveVerifiesWithTransparencyDevAlone(t *testing.T) {
	sock, l, _ := auditServer(t, filepath.Join(t.TempDir(), "ledger.db"))
	issue(t, l, 0, 123, "node-1")
	code, out, errs := ctl(t, sock, "ledger", "prove", "C02A")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	// Only the transparency-dev and x/mod libraries from here on.
	var b struct {
		LeafIndex   uint64   `json:"leaf_index"`
		LeafData    []byte   `json:"leaf_data"`
		Hashes      [][]byte `json:"hashes"`
		Checkpoint  string   `json:"checkpoint"`
		Origin      string   `json:"origin"`
		VerifierKey string   `json:"verifier_key"`
	}
	if err := json.Unmarshal([]byte(out), &b); err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(l.VerifierKey()) // the key the auditor pinned
	if err != nil {
		t.Fatal(err)
	}
	cp, _, _, err := log.ParseCheckpoint([]byte(b.Checkpoint), b.Origin, v)
	if err != nil {
		t.Fatal(err)
	}
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, b.LeafIndex, cp.Size, rfc6962.DefaultHasher.HashLeaf(b.LeafData), b.Hashes, cp.Hash); err != nil {
		t.Fatal(err)
	}
	if b.LeafIndex != 42 || !bytes.Contains(b.LeafData, []byte(`"serial":"c02a"`)) {
		t.Fatalf("proved entry %d: %s", b.LeafIndex, b.LeafData)
	}
}

func TestCertsListShowRevokeAndExport(t *testing.T) {
	sock, l, _ := auditServer(t, filepath.Join(t.TempDir(), "ledger.db"))
	issue(t, l, 0, 9, "node-1")
	code, out, errs := ctl(t, sock, "certs", "list", "--spiffe-id", "spiffe://cluster.local/ns/bookinfo/sa/svc1")
	if code != 0 || strings.Count(out, "svc1") != 3 || !strings.Contains(out, "SERIAL") {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
	if code, _, errs := ctl(t, sock, "certs", "revoke", "ffff", "--reason", "x"); code != 1 || !strings.Contains(errs, "NotFound") {
		t.Fatalf("revoke unknown: exit %d %s", code, errs)
	}
	if code, _, _ := ctl(t, sock, "certs", "revoke", "c004"); code != 2 {
		t.Fatalf("revoke without --reason: exit %d, want usage error 2", code)
	}
	if code, out, errs := ctl(t, sock, "certs", "revoke", "c004", "--reason", "keyCompromise"); code != 0 || !strings.Contains(out, "revoked c004") {
		t.Fatalf("revoke: exit %d %s %s", code, out, errs)
	}
	code, out, _ = ctl(t, sock, "certs", "list", "--state", "revoked", "-o", "json")
	var certs []certscmd.CertJSON
	if err := json.Unmarshal([]byte(out), &certs); err != nil || code != 0 || len(certs) != 1 ||
		certs[0].Serial != "c004" || certs[0].State != "revoked" || certs[0].RevokeReason != "keyCompromise" {
		t.Fatalf("revoked list: exit %d %v %s", code, err, out)
	}
	code, out, _ = ctl(t, sock, "certs", "show", "c004", "-o", "json")
	var shown certscmd.CertJSON
	if err := json.Unmarshal([]byte(out), &shown); err != nil || code != 0 || string(shown.CertDER) != "der" || shown.State != "revoked" {
		t.Fatalf("show: exit %d %v %s", code, err, out)
	}
	code, out, _ = ctl(t, sock, "ledger", "export")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 10 {
		t.Fatalf("export: exit %d, %d lines", code, len(lines))
	}
	var last ledgercmd.ExportLine
	if err := json.Unmarshal([]byte(lines[9]), &last); err != nil || last.Kind != "revocation" || last.Serial != "c004" || last.Error != "" {
		t.Fatalf("last export line %s: %v", lines[9], err)
	}
	if code, _, _ := ctl(t, sock, "certs", "list", "--state", "bogus"); code != 2 {
		t.Fatalf("bad --state: exit %d", code)
	}
}
