package main

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

	"github.com/castellan-dev/castellan/agent/logcheck"
	"golang.org/x/mod/sumdb/note"
)

// testWitness returns a valid --witness value.
func testWitness(t *testing.T) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	typed := append([]byte{0x04}, pub...)
	h := sha256.Sum256(append([]byte("w.test/a\n"), typed...))
	return fmt.Sprintf("w1=https://w.test/+w.test/a+%08x+%s", binary.BigEndian.Uint32(h[:4]), base64.StdEncoding.EncodeToString(typed))
}

func TestLogPolicyDefaultsAndRefusals(t *testing.T) {
	_, vkey, err := note.GenerateKey(rand.Reader, "cluster.local/castellan/ledger")
	if err != nil {
		t.Fatal(err)
	}
	w := testWitness(t)
	policyFile := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(policyFile, []byte("quorum: 1\nwitnesses:\n  - name: w1\n    url: https://w.test/\n    key: "+strings.SplitN(w, "+", 2)[1]+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"--data-dir", t.TempDir()}
	for _, tc := range []struct {
		name string
		args []string
		want logcheck.Mode
		err  string
	}{
		{"nothing configured", nil, logcheck.Off, ""},
		{"policy and key: enforce", []string{"--witness", w, "--log-key", vkey}, logcheck.Enforce, ""},
		{"policy file and key: enforce", []string{"--witness-policy", policyFile, "--log-key", vkey}, logcheck.Enforce, ""},
		{"policy without key: off", []string{"--witness", w}, logcheck.Off, ""},
		{"explicit monitor", []string{"--log-policy", "monitor", "--witness", w, "--log-key", vkey}, logcheck.Monitor, ""},
		{"explicit off", []string{"--log-policy", "off", "--witness", w, "--log-key", vkey}, logcheck.Off, ""},
		{"enforce without key", []string{"--log-policy", "enforce", "--witness", w}, logcheck.Off, "needs the log's key"},
		{"enforce without witnesses", []string{"--log-policy", "enforce", "--log-key", vkey}, logcheck.Off, "a witness policy"},
		{"both policy forms", []string{"--witness", w, "--witness-policy", policyFile}, logcheck.Off, "exclusive"},
		{"quorum alone", []string{"--witness-quorum", "2"}, logcheck.Off, "without --witness"},
		{"quorum too large", []string{"--witness", w, "--witness-quorum", "2"}, logcheck.Off, "quorum 2"},
		{"unknown policy", []string{"--log-policy", "audit"}, logcheck.Off, "want enforce, monitor or off"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := loadConfig(append(append([]string(nil), base...), tc.args...), func(string) string { return "" }, io.Discard)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			m, _, err := cfg.Log.mode()
			if err != nil || m != tc.want {
				t.Fatalf("mode = %v, %v; want %v", m, err, tc.want)
			}
		})
	}
}
