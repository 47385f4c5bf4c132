package keystore

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestKEKFileFormats(t *testing.T) {
	raw := make([]byte, kekSize)
	if _, err := rand.Read(raw); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var ids []string
	for name, data := range map[string][]byte{
		"raw": raw, "hex": []byte(hex.EncodeToString(raw) + "\n"),
		"base64": []byte(" " + base64.StdEncoding.EncodeToString(raw) + "\n"),
	} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		k, err := LoadKEK(path, false)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		ids = append(ids, k.ID())
	}
	if ids[0] != ids[1] || ids[1] != ids[2] {
		t.Fatalf("one key in three encodings gave fingerprints %v", ids)
	}
	short := filepath.Join(dir, "short")
	if err := os.WriteFile(short, raw[:31], 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKEK(short, true); err == nil || !strings.Contains(err.Error(), "want 32 bytes") {
		t.Fatalf("31-byte KEK: %v", err)
	}
}
