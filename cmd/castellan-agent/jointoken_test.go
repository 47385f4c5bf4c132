package main

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/castellan-dev/castellan/internal/testroot"
)

const testToken = "cjt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

func writeFile(t *testing.T, path, content string, mode os.FileMode) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // umask-proof
		t.Fatal(err)
	}
	return path
}

func TestJoinTokenFileChecks(t *testing.T) {
	dir := t.TempDir()
	uid := os.Geteuid()
	good := writeFile(t, filepath.Join(dir, "good"), testToken+"\n", 0o600)
	readOnly := writeFile(t, filepath.Join(dir, "ro"), testToken, 0o400)
	groupReadable := writeFile(t, filepath.Join(dir, "g"), testToken, 0o640)
	worldReadable := writeFile(t, filepath.Join(dir, "w"), testToken, 0o644)
	empty := writeFile(t, filepath.Join(dir, "empty"), "\n", 0o600)
	two := writeFile(t, filepath.Join(dir, "two"), testToken+"\n"+testToken, 0o600)
	big := writeFile(t, filepath.Join(dir, "big"), strings.Repeat("a", maxJoinTokenFileBytes+1), 0o600)
	link := filepath.Join(dir, "link")
	if err := os.Symlink(good, link); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path string
		uid        int
		want       string // substring of the refusal; "" for success
	}{
		{"0600, owner", good, uid, ""},
		{"0400, owner", readOnly, uid, ""},
		{"0640", groupReadable, uid, "chmod 600"},
		{"0644", worldReadable, uid, "has mode 0644"},
		{"another owner", good, uid + 1, "not by the agent's uid"},
		{"symlink to a good file", link, uid, "symbolic link"},
		{"directory", dir, uid, "not a regular file"},
		{"fifo (must not block)", fifo, uid, "not a regular file"},
		{"missing", filepath.Join(dir, "none"), uid, "no such file"},
		{"empty", empty, uid, "exactly one token"},
		{"two tokens", two, uid, "exactly one token"},
		{"too large", big, uid, "larger than"},
	} {
		got, err := readJoinTokenFile(tc.path, tc.uid)
		if tc.want == "" {
			if err != nil || got != testToken {
				t.Errorf("%s: %q, %v; want the token", tc.name, got, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) || got != "" {
			t.Errorf("%s: %q, %v; want an error containing %q", tc.name, got, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), testToken) {
			t.Errorf("%s: the error shows the token: %v", tc.name, err)
		}
	}
}

// TestJoinTokenFileOwnedByAnotherUser chowns a 0600 file to another uid
// (needs root) and checks that the agent's uid is what counts.
func TestJoinTokenFileOwnedByAnotherUser(t *testing.T) {
	testroot.Require(t, "chown a token file to another user")
	path := writeFile(t, filepath.Join(t.TempDir(), "tok"), testToken, 0o600)
	if err := os.Chown(path, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if _, err := readJoinTokenFile(path, 0); err == nil || !strings.Contains(err.Error(), "owned by uid 65534") {
		t.Fatalf("root agent, file of uid 65534: %v; want refused", err)
	}
}

func TestJoinTokenOnArgvIsRefused(t *testing.T) {
	noEnv := func(string) string { return "" }
	for _, args := range [][]string{
		{"--data-dir", "/x", "--join-token", testToken},
		{"--data-dir", "/x", "-join-token=" + testToken},
	} {
		var usage strings.Builder
		_, err := loadConfig(args, noEnv, &usage)
		if !errors.Is(err, errJoinTokenOnArgv) {
			t.Fatalf("%q: %v; want the --join-token refusal", args, err)
		}
		for _, want := range []string{"--join-token-file", joinTokenEnv, "/proc/PID/cmdline"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("refusal does not mention %s: %v", want, err)
			}
		}
		if strings.Contains(err.Error()+usage.String(), testToken) {
			t.Errorf("the refusal or usage output shows the token")
		}
	}
}

func TestJoinTokenFromEnvironment(t *testing.T) {
	env := map[string]string{joinTokenEnv: " " + testToken + "\n"}
	cfg, err := loadConfig([]string{"--data-dir", "/x"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil || cfg.JoinToken != testToken {
		t.Fatalf("token from %s: %q, %v", joinTokenEnv, cfg.JoinToken, err)
	}
	_, err = loadConfig([]string{"--data-dir", "/x", "--join-token-file", "/f"}, func(k string) string { return env[k] }, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "give the join token once") {
		t.Fatalf("file and environment both set: %v; want refused", err)
	}
	env = map[string]string{"CASTELLAN_AGENT_JOIN_TOKEN_FILE": "/run/tok"}
	cfg, err = loadConfig([]string{"--data-dir", "/x"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil || cfg.JoinTokenFile != "/run/tok" || cfg.JoinToken != "" {
		t.Fatalf("CASTELLAN_AGENT_JOIN_TOKEN_FILE: %+v, %v", cfg, err)
	}
}

func TestAbsentTokenFileMeansNoToken(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	tok, err := joinToken(config{JoinTokenFile: filepath.Join(t.TempDir(), "spent")}, log)
	if err != nil || tok != "" {
		t.Fatalf("absent file: %q, %v; want no token and no error", tok, err)
	}
	path := writeFile(t, filepath.Join(t.TempDir(), "tok"), testToken, 0o644)
	if _, err := joinToken(config{JoinTokenFile: path}, log); err == nil {
		t.Fatal("a 0644 token file was accepted")
	}
	removeSpentTokenFile(path, log)
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("spent token file still there: %v", err)
	}
}
