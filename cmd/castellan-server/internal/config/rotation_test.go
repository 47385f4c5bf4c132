package config

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestConfigRotationFlags(t *testing.T) {
	dir := t.TempDir()
	kek := filepath.Join(dir, "kek")
	if err := os.WriteFile(kek, make([]byte, 32), 0o400); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(file, []byte("publish_delay: 2h\nprepare_at: 0.6\nkek_file: "+kek+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load([]string{"--config", file}, envOf(map[string]string{"CASTELLAN_PREPARE_AT": "0.7"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.PublishDelay != 2*time.Hour || cfg.PrepareAt != 0.7 || cfg.KEKFile != kek {
		t.Fatalf("rotation config %s %v %q: YAML, then the environment over it", cfg.PublishDelay, cfg.PrepareAt, cfg.KEKFile)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--publish-delay", "-1s"}, "--publish-delay -1s must not be negative"},
		{[]string{"--prepare-at", "1"}, "--prepare-at 1 must be between 0 and 1"},
		{[]string{"--prepare-at", "-0.5"}, "--prepare-at -0.5 must be between 0 and 1"},
	} {
		if _, err := Load(tc.args, envOf(nil), io.Discard); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.args, err, tc.want)
		}
	}
}
