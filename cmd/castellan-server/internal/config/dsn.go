package config

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"syscall"
)

// Datastore kinds (--datastore).
const (
	KindBolt     = "bolt"     // bbolt files in --data-dir, one replica
	KindPostgres = "postgres" // PostgreSQL shared by every replica
)

// maxSecretFileBytes bounds what is read from --datastore-file.
const maxSecretFileBytes = 16 << 10

// ResolveDatastore resolves --datastore or --datastore-file: the kind of
// datastore and, for PostgreSQL, its URL. A --datastore-file is always
// PostgreSQL, even when it cannot be read.
func (c Config) ResolveDatastore() (kind, dsn string, err error) {
	if c.DatastoreFile != "" {
		dsn, err := readDSNFile(c.DatastoreFile)
		return KindPostgres, dsn, err
	}
	kind, err = datastoreKind(c.Datastore)
	if kind == KindPostgres {
		dsn = c.Datastore
	}
	return kind, dsn, err
}

// checkDatastore validates the datastore flags and those that depend on
// the kind of datastore.
func (c Config) checkDatastore() []error {
	if c.Datastore != "" && c.DatastoreFile != "" {
		return []error{errors.New("--datastore and --datastore-file are both set; give the datastore URL one way")}
	}
	var errs []error
	kind, _, err := c.ResolveDatastore()
	if err != nil {
		errs = append(errs, err)
	}
	for flag, file := range map[string]string{"--ledger-key-file": c.LedgerKeyFile, "--kek-file": c.KEKFile} {
		if file == "" {
			continue
		}
		if _, err := readSecretFile(file, flag); err != nil {
			errs = append(errs, err)
		}
	}
	if kind != KindPostgres {
		return errs
	}
	if c.LedgerKeyFile == "" {
		errs = append(errs, errors.New("--ledger-key-file is required with a PostgreSQL datastore: every replica must sign the shared log with the same key; "+
			"create one with `castellanctl ledger keygen` and mount it from a Secret"))
	}
	if c.LedgerReadOnlyForensics {
		errs = append(errs, errors.New("--ledger-read-only-forensics salvages a damaged bolt ledger file; it does not apply to a PostgreSQL datastore"))
	}
	if c.RootCert == "" && c.KEKFile == "" {
		errs = append(errs, errors.New("a PostgreSQL datastore is shared by replicas, which must all sign with one CA: "+
			"give --kek-file (the key that seals the CA's generated keys in the shared authority journal, the same file on every replica), "+
			"or a plug-in CA with --root-cert, --intermediate-cert and --intermediate-key (e.g. from the cacerts Secret)"))
	}
	return errs
}

// datastoreKind returns the kind of datastore dsn selects. Its errors
// never quote dsn, which may hold a password.
func datastoreKind(dsn string) (string, error) {
	if dsn == "" || dsn == KindBolt {
		return KindBolt, nil
	}
	scheme, _, ok := strings.Cut(dsn, "://")
	if !ok {
		return "", errors.New("--datastore is neither bolt nor a URL; use bolt (files in --data-dir) or postgres://USER@HOST:PORT/DATABASE?sslmode=verify-full (keyword=value connection strings are not accepted)")
	}
	switch strings.ToLower(scheme) {
	case "postgres", "postgresql":
	default:
		return "", fmt.Errorf("--datastore scheme %q is not supported; use bolt or postgres://USER@HOST:PORT/DATABASE", scheme)
	}
	u, err := url.Parse(dsn)
	switch {
	case err != nil:
		// url's error quotes the whole URL, password included: not shown.
		return "", errors.New("--datastore is not a valid postgres:// URL; percent-encode special characters of the user name and password (e.g. @ as %40, / as %2F)")
	case u.Host == "" && u.Query().Get("host") == "":
		return "", errors.New("--datastore names no host; use postgres://USER@HOST:PORT/DATABASE")
	case strings.TrimPrefix(u.Path, "/") == "" && u.Query().Get("dbname") == "":
		return "", errors.New("--datastore names no database; use postgres://USER@HOST:PORT/DATABASE")
	}
	return KindPostgres, nil
}

// dsnWarnings returns what is unsafe about a PostgreSQL dsn that is still
// accepted: a password given where other users can see it, and a
// connection whose server is not authenticated.
func dsnWarnings(dsn string, onCmdLine bool) []string {
	u, err := url.Parse(dsn)
	if err != nil {
		return nil
	}
	var warn []string
	if _, ok := u.User.Password(); (ok || u.Query().Has("password")) && onCmdLine {
		warn = append(warn, "the datastore password is on the command line, where every user of this host can read it (ps); use --datastore-file or CASTELLAN_DATASTORE")
	}
	mode := u.Query().Get("sslmode")
	if mode != "verify-full" && mode != "verify-ca" && !loopbackHost(u) {
		warn = append(warn, fmt.Sprintf("the connection to PostgreSQL does not verify the server (sslmode=%q): whoever can intercept it can read and forge the CA's state; use sslmode=verify-full and sslrootcert", mode))
	}
	return warn
}

// loopbackHost reports whether u connects over loopback or a Unix socket.
func loopbackHost(u *url.URL) bool {
	host := u.Hostname()
	if host == "" {
		host = u.Query().Get("host")
	}
	if host == "localhost" || strings.HasPrefix(host, "/") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// readDSNFile reads the datastore URL from path (--datastore-file): one
// line, a postgres:// URL, in a file checked by readSecretFile.
func readDSNFile(path string) (string, error) {
	b, err := readSecretFile(path, "--datastore-file")
	if err != nil {
		return "", err
	}
	dsn := strings.TrimSpace(string(b))
	switch {
	case dsn == "":
		return "", fmt.Errorf("--datastore-file %s is empty; it must hold the postgres:// URL of the datastore", path)
	case strings.ContainsAny(dsn, "\r\n"):
		return "", fmt.Errorf("--datastore-file %s holds several lines; it must hold one postgres:// URL", path)
	}
	if kind, err := datastoreKind(dsn); err != nil {
		return "", fmt.Errorf("--datastore-file %s: %w", path, err)
	} else if kind != KindPostgres {
		return "", fmt.Errorf("--datastore-file %s must hold a postgres:// URL (bolt needs no file: drop --datastore-file)", path)
	}
	return dsn, nil
}

// readSecretFile reads a file holding a secret (a password, a signing
// key), after checking on the opened file that no other user can read or
// change it: a regular file, owned by this process's user or root,
// writable by its owner only, not readable by others, and readable by its
// group only if that group is one of this process's groups (a Kubernetes
// Secret mounted with fsGroup is root:<fsGroup> mode 0440: only the pod's
// processes read it). Symbolic links are followed (a Secret's files are
// links into its current version).
func readSecretFile(path, flag string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	if err := checkSecretMode(fi, path, flag, os.Geteuid(), ownGroups()); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	if len(b) > maxSecretFileBytes {
		return nil, fmt.Errorf("%s %s is larger than %d bytes; give the file holding the secret itself", flag, path, maxSecretFileBytes)
	}
	return b, nil
}

// checkSecretMode applies readSecretFile's rule to fi for a process with
// effective uid euid and groups gids.
func checkSecretMode(fi os.FileInfo, path, flag string, euid int, gids []int) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	perm := fi.Mode().Perm()
	switch {
	case !fi.Mode().IsRegular():
		return fmt.Errorf("%s %s is not a regular file (%s)", flag, path, fi.Mode().Type())
	case !ok:
		return fmt.Errorf("%s %s: cannot read its owner", flag, path)
	case int(st.Uid) != euid && st.Uid != 0:
		return fmt.Errorf("%s %s is owned by uid %d, neither this process's uid %d nor root: that user can change it; chown it", flag, path, st.Uid, euid)
	case perm&0o004 != 0:
		return fmt.Errorf("%s %s has mode %04o: every user of this host can read it; chmod 600 it (or 0400 on a Kubernetes Secret volume) and change the secret, it may have been read", flag, path, perm)
	case perm&0o022 != 0:
		return fmt.Errorf("%s %s has mode %04o: users other than its owner can change it; chmod 600 it", flag, path, perm)
	case perm&0o040 != 0 && !slices.Contains(gids, int(st.Gid)):
		return fmt.Errorf("%s %s has mode %04o and group %d, which this process is not in: the members of that group can read it; chmod 600 it, or give it this process's group", flag, path, perm, st.Gid)
	}
	return nil
}

// ownGroups returns this process's effective and supplementary groups.
func ownGroups() []int {
	gids, _ := os.Getgroups()
	return append(gids, os.Getegid())
}
