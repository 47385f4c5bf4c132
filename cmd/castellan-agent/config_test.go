package main

import (
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestServerAddressesFromEverySource(t *testing.T) {
	dir := t.TempDir()
	yamlList := filepath.Join(dir, "list.yaml")
	yamlOne := filepath.Join(dir, "one.yaml")
	writeConfig(t, yamlList, "data_dir: /from-file\nserver_address:\n  - ca-0.example:8443\n  - ca-1.example:8443\nserver_failover_timeout: 3s\n")
	writeConfig(t, yamlOne, "server_address: dns:///ca-headless.castellan-system.svc:8443\n")
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want []string
	}{
		{"default", nil, nil, []string{"127.0.0.1:8443"}},
		{"repeated flag", []string{"--server-address", "a:1", "--server-address=b:2"}, nil, []string{"a:1", "b:2"}},
		{"environment list", nil, map[string]string{"CASTELLAN_AGENT_SERVER_ADDRESS": "a:1, b:2,c:3"}, []string{"a:1", "b:2", "c:3"}},
		{"YAML list", []string{"--config", yamlList}, nil, []string{"ca-0.example:8443", "ca-1.example:8443"}},
		{"YAML scalar", []string{"--config", yamlOne}, nil, []string{"dns:///ca-headless.castellan-system.svc:8443"}},
		{"YAML from the environment", nil, map[string]string{"CASTELLAN_AGENT_CONFIG": yamlList}, []string{"ca-0.example:8443", "ca-1.example:8443"}},
		{"environment replaces YAML", []string{"--config", yamlList}, map[string]string{"CASTELLAN_AGENT_SERVER_ADDRESS": "e:1"}, []string{"e:1"}},
		{"flags replace the environment", []string{"--server-address", "f:1", "--server-address", "g:2"},
			map[string]string{"CASTELLAN_AGENT_SERVER_ADDRESS": "e:1,e:2"}, []string{"f:1", "g:2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"--data-dir", "/x"}, tc.args...)
			cfg, err := loadConfig(args, func(k string) string { return tc.env[k] }, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(cfg.ServerAddresses, tc.want) {
				t.Fatalf("server addresses %q, want %q", cfg.ServerAddresses, tc.want)
			}
		})
	}
	cfg, err := loadConfig([]string{"--config", yamlList}, func(string) string { return "" }, io.Discard)
	if err != nil || cfg.DataDir != "/from-file" || cfg.FailoverTimeout != 3*time.Second {
		t.Fatalf("YAML data_dir and server_failover_timeout: %q, %v, %v", cfg.DataDir, cfg.FailoverTimeout, err)
	}
}

func TestBadConfigSaysWhatToFix(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, yaml string
		args       []string
		want       string
	}{
		{"unknown key", "server_adress: a:1\n", nil, `unknown key "server_adress"`},
		{"token in the file", "join_token: " + testToken + "\n", nil, "join_token is refused"},
		{"config names itself", "config: /etc/other.yaml\n", nil, `unknown key "config"`},
		{"list for a single value", "trust_domain: [a, b]\n", nil, "want a single value"},
		{"mapping for a list", "server_address: {a: 1}\n", nil, "want a string or a list of strings"},
		{"bad duration", "server_failover_timeout: soon\n", nil, "server_failover_timeout (line 1)"},
		{"not a mapping", "- a\n- b\n", nil, "want a mapping"},
		{"negative timeout", "", []string{"--server-failover-timeout=-1s"}, "is negative"},
		{"empty address list", "server_address: []\n", nil, "--server-address is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".yaml")
			writeConfig(t, path, tc.yaml)
			args := append([]string{"--data-dir", "/x", "--config", path}, tc.args...)
			_, err := loadConfig(args, func(string) string { return "" }, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), testToken) {
				t.Fatal("the error shows the token")
			}
		})
	}
}

func writeConfig(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
