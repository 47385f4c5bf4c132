package integration_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/integration/testbin"
)

// TestCAServerRefusesBadDatastoreConfig: the real binary refuses a
// datastore it cannot use safely, before touching anything, with exit
// status 1 and a message naming the flag, never the password.
func TestCAServerRefusesBadDatastoreConfig(t *testing.T) {
	var bins testbin.Builder
	t.Cleanup(bins.Cleanup)
	serverBin := bins.Path(t, "castellan-server")
	dir := t.TempDir()
	const secret = "hunter2-s3cret"
	dsn := "postgres://castellan:" + secret + "@db.example:5432/castellan?sslmode=verify-full"
	open := filepath.Join(dir, "dsn-open")
	if err := os.WriteFile(open, []byte(dsn), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"world-readable DSN file", []string{"--datastore-file", open}, "every user of this host can read it"},
		{"unknown scheme", []string{"--datastore", "mysql://castellan:" + secret + "@db/x"}, `scheme "mysql" is not supported`},
		{"no log key", []string{"--datastore", dsn}, "--ledger-key-file is required"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := exec.CommandContext(ctx, serverBin, append([]string{"--data-dir", filepath.Join(dir, "data"),
			"--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"}, tc.args...)...)
		out, err := cmd.CombinedOutput()
		cancel()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), tc.want) {
			t.Errorf("%s: %v\n%s\nwant exit status 1 and %q", tc.name, err, out, tc.want)
		}
		if strings.Contains(string(out), secret) {
			t.Errorf("%s: the output shows the password:\n%s", tc.name, out)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "data")); !os.IsNotExist(err) {
		t.Errorf("a refused configuration created the data directory: %v", err)
	}
}
