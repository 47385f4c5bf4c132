package config

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/castellan-dev/castellan/ca/ledger/logkey"
)

func testWitnessFlag(t *testing.T, name string) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	typed := append([]byte{0x04}, pub...)
	h := sha256.Sum256(append([]byte("w.test/"+name+"\n"), typed...))
	return fmt.Sprintf("%s=https://%s.test/+w.test/%s+%08x+%s", name, name, name, binary.BigEndian.Uint32(h[:4]), base64.StdEncoding.EncodeToString(typed))
}

func TestLedgerOriginKeepsAnExistingLogsName(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "none.key")
	if o, err := (Witness{}).Origin("example.org", missing); err != nil || o != "example.org/castellan/ledger" {
		t.Fatalf("new ledger: %q, %v; want example.org/castellan/ledger", o, err)
	}
	if o, err := (Witness{LedgerOrigin: "ca.example.org/log"}).Origin("example.org", missing); err != nil || o != "ca.example.org/log" {
		t.Fatalf("new ledger with --ledger-origin: %q, %v", o, err)
	}
	key := filepath.Join(dir, "ledger.db.key")
	if _, err := logkey.GenerateKeyFile(key, logkey.DefaultOrigin); err != nil {
		t.Fatal(err)
	}
	if o, err := (Witness{}).Origin("example.org", key); err != nil || o != logkey.DefaultOrigin {
		t.Fatalf("existing ledger: %q, %v; want its key's name %q", o, err, logkey.DefaultOrigin)
	}
	_, err := (Witness{LedgerOrigin: "other.example/log"}).Origin("example.org", key)
	if err == nil || !strings.Contains(err.Error(), "cannot be renamed") {
		t.Fatalf("renaming an existing log: %v, want a refusal", err)
	}
	bad := filepath.Join(dir, "bad.key")
	if err := os.WriteFile(bad, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := (Witness{}).Origin("example.org", bad); err == nil || !strings.Contains(err.Error(), "not a note signer key") {
		t.Fatalf("damaged key file: %v", err)
	}
}

func TestWitnessFlagsAndYAML(t *testing.T) {
	w1, w2 := testWitnessFlag(t, "w1"), testWitnessFlag(t, "w2")
	getenv := func(string) string { return "" }
	cfg, err := Load([]string{"--data-dir", t.TempDir(), "--witness", w1, "--witness", w2, "--witness-quorum", "1"}, getenv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	p, err := cfg.Witness.Policy()
	if err != nil || p.String() != "1 of [w1 w2]" {
		t.Fatalf("policy %v, %v", p, err)
	}
	yml := filepath.Join(t.TempDir(), "server.yaml")
	if err := os.WriteFile(yml, []byte(fmt.Sprintf("data_dir: %s\nwitness:\n  - %q\nledger_origin: ca.example/log\n", t.TempDir(), w1)), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err = Load([]string{"--config", yml}, getenv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if p, err := cfg.Witness.Policy(); err != nil || p.String() != "1 of [w1]" || cfg.LedgerOrigin != "ca.example/log" {
		t.Fatalf("YAML: policy %v, %v, origin %q", p, err, cfg.LedgerOrigin)
	}
	for name, args := range map[string][]string{
		"exclusive":    {"--witness", w1, "--witness-policy", yml},
		"quorum alone": {"--witness-quorum", "1"},
		"bad witness":  {"--witness", "w1=https://w.test/"},
	} {
		if _, err := Load(append([]string{"--data-dir", t.TempDir()}, args...), getenv, io.Discard); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
