package config

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestQuotaAndReserveFlags(t *testing.T) {
	cfg, err := Load(nil, envOf(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.LedgerDiskReserve != 512<<20 {
		t.Errorf("default reserve %d, want 512MiB", cfg.LedgerDiskReserve)
	}
	q := cfg.Quotas(nil)
	if q.Node.Burst != 512 || q.Node.Every != time.Hour/1024 || q.IdentityPerTTL != 8 {
		t.Errorf("default quotas %+v", q)
	}
	file := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(file, []byte("ledger_disk_reserve: 2GiB\nquota_node_burst: 50\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := envOf(map[string]string{"CASTELLAN_CONFIG": file, "CASTELLAN_QUOTA_NODE_PER_HOUR": "60"})
	cfg, err = Load([]string{"--quota-identity-per-ttl", "2"}, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	q = cfg.Quotas(nil)
	if cfg.LedgerDiskReserve != 2<<30 || q.Node.Burst != 50 || q.Node.Every != time.Minute || q.IdentityPerTTL != 2 {
		t.Errorf("reserve %d, quotas %+v", cfg.LedgerDiskReserve, q)
	}
	for _, args := range [][]string{
		{"--ledger-disk-reserve", "lots"},
		{"--ledger-disk-reserve", "99999999999TiB"},
		{"--quota-node-burst", "-1"},
	} {
		if _, err := Load(args, envOf(nil), io.Discard); err == nil {
			t.Errorf("%q accepted", args)
		} else if !strings.Contains(err.Error(), args[0]) && !strings.Contains(err.Error(), "size") {
			t.Errorf("%q: error %q does not name the flag", args, err)
		}
	}
}
