package config

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestConfigPrecedenceFlagsOverEnvOverFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.yaml")
	yaml := "trust_domain: file.example\nmax_ttl: 12h\ndefault_ttl: 30m\nadmin_ids: [spiffe://env.example/admin-file]\nlisten: 127.0.0.1:1111\n"
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	env := envOf(map[string]string{
		"CASTELLAN_CONFIG":       file,
		"CASTELLAN_TRUST_DOMAIN": "env.example",
		"CASTELLAN_LISTEN":       "127.0.0.1:2222",
		"CASTELLAN_ADMIN_ID":     "spiffe://env.example/a,spiffe://env.example/b",
	})
	cfg, err := Load([]string{"--listen", "127.0.0.1:3333"}, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case cfg.TrustDomain != "env.example":
		t.Errorf("trust domain %q: env must override the file", cfg.TrustDomain)
	case cfg.Listen != "127.0.0.1:3333":
		t.Errorf("listen %q: the flag must override env", cfg.Listen)
	case cfg.MaxTTL != 12*time.Hour || cfg.DefaultTTL != 30*time.Minute:
		t.Errorf("TTLs %s/%s: the file must override defaults", cfg.DefaultTTL, cfg.MaxTTL)
	case strings.Join(cfg.AdminIDs, " ") != "spiffe://env.example/a spiffe://env.example/b":
		t.Errorf("admin IDs %v: env replaces the file's list", cfg.AdminIDs)
	}
}

func TestConfigValidationSaysWhatToFix(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--trust-domain", "Bad Domain"}, "--trust-domain"},
		{[]string{"--default-ttl", "48h"}, "--default-ttl 48h0m0s exceeds --max-ttl"},
		{[]string{"--agent-ttl", "0s"}, "must be positive"},
		{[]string{"--listen", "nohost"}, "--listen \"nohost\" is not HOST:PORT"},
		{[]string{"--root-cert", "/nonexistent.pem"}, "needs all of --root-cert"},
		{[]string{"--admin-id", "spiffe://other.example/x"}, "not in trust domain"},
		{[]string{"--log-level", "loud"}, "--log-level"},
		{[]string{"--istio-trusted-node-sa", "istio-system/ztunnel"}, "--istio-trusted-node-sa needs --istio-api"},
		{[]string{"--istio-api", "--istio-trusted-node-sa", "ztunnel"}, "--istio-trusted-node-sa: "},
		{[]string{"--server-name", "castellan_ca.svc"}, `--server-name: server name "castellan_ca.svc" is not an IP address or a valid DNS name`},
		{[]string{"--server-name", "-ca.svc"}, "starts or ends with a hyphen"},
		{[]string{"--server-name", "*.svc"}, "wildcards are not accepted"},
		{[]string{"--server-name", ""}, "it is empty"},
		{[]string{"--server-name", "fe80::1%eth0"}, "no zone"},
	} {
		_, err := Load(tc.args, envOf(nil), io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.args, err, tc.want)
		}
	}
}

func TestConfigUsageErrors(t *testing.T) {
	for _, args := range [][]string{{"--no-such-flag"}, {"extra-arg"}} {
		if _, err := Load(args, envOf(nil), io.Discard); !errors.Is(err, ErrUsage) {
			t.Errorf("%v: %v, want a usage error", args, err)
		}
	}
	file := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(file, []byte("trust_domian: typo.example\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load([]string{"--config", file}, envOf(nil), io.Discard); err == nil || !strings.Contains(err.Error(), "trust_domian") {
		t.Errorf("unknown YAML key: %v, want an error naming it", err)
	}
}

func TestConfigServerNames(t *testing.T) {
	cfg, err := Load(nil, envOf(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cfg.ServerNames, " "); got != "localhost 127.0.0.1" {
		t.Errorf("default server names %q, want localhost and 127.0.0.1", got)
	}
	cfg, err = Load([]string{"--server-name", "castellan-ca.castellan-system.svc", "--server-name=10.0.0.7"},
		envOf(map[string]string{"CASTELLAN_SERVER_NAME": "env.example"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cfg.ServerNames, " "); got != "castellan-ca.castellan-system.svc 10.0.0.7" {
		t.Errorf("server names %q: the flags replace the default and the environment", got)
	}
	cfg, err = Load(nil, envOf(map[string]string{"CASTELLAN_SERVER_NAME": "a.example,::1"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cfg.ServerNames, " "); got != "a.example ::1" {
		t.Errorf("server names %q from CASTELLAN_SERVER_NAME", got)
	}
	file := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(file, []byte("server_names: [ca.example]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err = Load([]string{"--config", file}, envOf(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cfg.ServerNames, " "); got != "ca.example" {
		t.Errorf("server names %q from YAML: the file replaces the default", got)
	}
}
