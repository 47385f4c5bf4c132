package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// How the agent takes its join token. Whoever presents a join token first
// becomes the node's agent, so the token is never taken from the command
// line, which every local user can read in /proc/PID/cmdline. It comes
// from a file only the agent's user can read (--join-token-file), read
// once at start and deleted after the join has spent it, or from the
// environment (CASTELLAN_AGENT_JOIN_TOKEN; /proc/PID/environ is readable
// only by the agent's user and root), which the agent clears once read so
// that no child process inherits it.
const (
	joinTokenEnv = "CASTELLAN_AGENT_JOIN_TOKEN"
	// maxJoinTokenFileBytes bounds the token file; a token is 47 bytes.
	maxJoinTokenFileBytes = 4096
)

// errJoinTokenOnArgv is the refusal of --join-token VALUE.
var errJoinTokenOnArgv = errors.New("--join-token is refused: a token on the command line is readable by every local user in /proc/PID/cmdline, " +
	"and whoever presents it first becomes this node's agent. Write it to a file only the agent's user can read and pass --join-token-file FILE " +
	"(`castellanctl token create --node NAME --out FILE` writes one, mode 0600), or set " + joinTokenEnv)

// argvJoinToken is the --join-token flag: it only records that it was given
// (its value is never kept or printed), so that loadConfig can refuse it.
type argvJoinToken struct{ given bool }

func (a *argvJoinToken) String() string { return "" }

func (a *argvJoinToken) Set(string) error {
	a.given = true
	return nil
}

// readJoinTokenFile reads the join token in path once. The file must be a
// regular file (a symlink is refused, even to a regular file), owned by
// uid, with no permission for group or others (0600 or 0400), and hold
// one token; the checks are made on the opened file, so the file cannot be
// swapped between check and read.
func readJoinTokenFile(path string, uid int) (string, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if errors.Is(err, syscall.ELOOP) {
		return "", fmt.Errorf("--join-token-file %s is a symbolic link; give the path of the token file itself", path)
	}
	if err != nil {
		return "", fmt.Errorf("--join-token-file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("--join-token-file: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.Mode().IsRegular():
		return "", fmt.Errorf("--join-token-file %s is not a regular file (%s)", path, fi.Mode().Type())
	case fi.Mode().Perm()&0o077 != 0:
		return "", fmt.Errorf("--join-token-file %s has mode %04o: other users may read the token; make it readable by its owner only (chmod 600 %s) and create a new token, this one may have been read",
			path, fi.Mode().Perm(), path)
	case !ok || int(st.Uid) != uid:
		return "", fmt.Errorf("--join-token-file %s is owned by uid %d, not by the agent's uid %d; chown it to the agent's user (another user could have written or read it)",
			path, st.Uid, uid)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxJoinTokenFileBytes+1))
	if err != nil {
		return "", fmt.Errorf("--join-token-file: %w", err)
	}
	token := strings.TrimSpace(string(b))
	switch {
	case len(b) > maxJoinTokenFileBytes:
		return "", fmt.Errorf("--join-token-file %s is larger than %d bytes; it should hold one token", path, maxJoinTokenFileBytes)
	case token == "" || strings.ContainsAny(token, " \t\r\n"):
		return "", fmt.Errorf("--join-token-file %s must hold exactly one token (the output of castellanctl token create)", path)
	}
	return token, nil
}

// joinToken returns the configured join token: from --join-token-file or
// the environment (loadConfig refuses both at once). A token file that does
// not exist gives no token: the agent deletes it after joining, and on
// restart uses the agent SVID in its data directory.
func joinToken(cfg config, log *slog.Logger) (string, error) {
	if cfg.JoinTokenFile == "" {
		return cfg.JoinToken, nil
	}
	token, err := readJoinTokenFile(cfg.JoinTokenFile, os.Geteuid())
	if errors.Is(err, os.ErrNotExist) {
		log.Info("join token file absent (it is deleted after a successful join); using the agent SVID in --data-dir", "file", cfg.JoinTokenFile)
		return "", nil
	}
	return token, err
}

// spendsToken reports whether bootstrapping with a join token will use it:
// only when the agent holds no agent SVID valid at now.
func spendsToken(held *x509svid.SVID, now time.Time) bool {
	return held == nil || !now.Before(held.Certificates[0].NotAfter)
}

// removeSpentTokenFile deletes the token file after a join spent its token:
// it is useless from then on, and presenting it again would be reported by
// the CA as a possible theft.
func removeSpentTokenFile(path string, log *slog.Logger) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		log.Warn("could not delete the spent join token file; delete it by hand", "file", path, "error", err.Error())
		return
	}
	log.Info("join token spent; token file deleted", "file", path)
}
