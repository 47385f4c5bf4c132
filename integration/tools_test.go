package integration_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// testTool is a pinned third-party CLI a test runs (helm, promtool), built
// from the Go module proxy by its build script into the cache.
type testTool struct {
	name    string // for messages
	env     string // variable holding the binary's path (make test sets it)
	require string // variable that, set to 1, turns a skip into a failure
	build   string // the build script, relative to the repository root
}

var (
	helmTool     = testTool{"helm", "CASTELLAN_HELM", "CASTELLAN_REQUIRE_HELM", "integration/helm/tool/build.sh"}
	promtoolTool = testTool{"promtool", "CASTELLAN_PROMTOOL", "CASTELLAN_REQUIRE_PROMTOOL", "integration/promtool/tool/build.sh"}
)

// path returns the tool's binary, or skips t (fails it when the require
// variable is 1) if it is not there.
func (tt testTool) path(t *testing.T) string {
	t.Helper()
	p := os.Getenv(tt.env)
	why := ""
	if p == "" {
		why = tt.env + " is not set"
	} else if fi, err := os.Stat(p); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		why = fmt.Sprintf("%s=%s is not an executable", tt.env, p)
	}
	if why == "" {
		return p
	}
	msg := fmt.Sprintf("%s: %s (build it with %s=$(./%s))", tt.name, why, tt.env, tt.build)
	if os.Getenv(tt.require) == "1" {
		t.Fatalf("%s; %s=1 forbids skipping", msg, tt.require)
	}
	t.Skipf("%s; skipping (set %s=1 to fail instead)", msg, tt.require)
	return ""
}

// toolResult is one run of a tool.
type toolResult struct {
	stdout, stderr string
	err            error
}

// run runs bin with args (bounded to two minutes), with HOME and the
// tools' config, cache and data directories in a temporary directory and no
// kubeconfig, so a developer's settings never leak in.
func runTool(t *testing.T, bin string, args ...string) toolResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	home := t.TempDir()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "HOME="+home, "KUBECONFIG="+os.DevNull,
		"HELM_CACHE_HOME="+home+"/cache", "HELM_CONFIG_HOME="+home+"/config", "HELM_DATA_HOME="+home+"/data")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	return toolResult{stdout.String(), stderr.String(), err}
}

// mustRunTool is runTool that fails t when the tool fails.
func mustRunTool(t *testing.T, bin string, args ...string) string {
	t.Helper()
	r := runTool(t, bin, args...)
	if r.err != nil {
		t.Fatalf("%s %s: %v\nstderr: %s\nstdout: %s", bin, strings.Join(args, " "), r.err, r.stderr, r.stdout)
	}
	return r.stdout
}
