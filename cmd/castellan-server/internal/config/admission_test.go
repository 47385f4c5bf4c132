package config

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/server/admission"
)

// --max-csrs-in-flight defaults to the server's bound for this machine,
// 0 turns the bound off (a negative server.Config value), and the file,
// environment and flag set it in that order of precedence; a negative
// bound or a non-positive wait is refused naming the flag.
func TestAdmissionFlags(t *testing.T) {
	cfg, err := Load(nil, envOf(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MaxCSRsInFlight != admission.DefaultCapacity() || cfg.AdmissionWait != admission.DefaultWait {
		t.Errorf("defaults: %d CSRs, wait %s", cfg.MaxCSRsInFlight, cfg.AdmissionWait)
	}
	if got := cfg.AdmissionCapacity(); got != cfg.MaxCSRsInFlight {
		t.Errorf("server bound %d for flag %d", got, cfg.MaxCSRsInFlight)
	}
	if got := (Config{}).AdmissionCapacity(); got >= 0 {
		t.Errorf("--max-csrs-in-flight 0 gives server bound %d, want negative (unbounded)", got)
	}
	file := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(file, []byte("max_csrs_in_flight: 100\nadmission_wait: 5s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := envOf(map[string]string{"CASTELLAN_CONFIG": file, "CASTELLAN_ADMISSION_WAIT": "3s"})
	cfg, err = Load([]string{"--max-csrs-in-flight", "200"}, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MaxCSRsInFlight != 200 || cfg.AdmissionWait != 3*time.Second {
		t.Errorf("got %d CSRs, wait %s; want 200 (flag), 3s (environment)", cfg.MaxCSRsInFlight, cfg.AdmissionWait)
	}
	for _, args := range [][]string{
		{"--max-csrs-in-flight", "-1"},
		{"--admission-wait", "0s"},
		{"--admission-wait", "-1s"},
	} {
		if _, err := Load(args, envOf(nil), io.Discard); err == nil {
			t.Errorf("%q accepted", args)
		} else if !strings.Contains(err.Error(), args[0]) {
			t.Errorf("%q: error %q does not name the flag", args, err)
		}
	}
}
