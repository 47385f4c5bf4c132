package config

import (
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// writeFile writes content to a new file in dir with mode perm and
// returns its path.
func writeFile(t *testing.T, dir, name, content string, perm os.FileMode) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, perm); err != nil { // not masked by the umask
		t.Fatal(err)
	}
	return path
}

// pluggedCA returns the flags of a plugged-in CA (validation only checks
// that the files exist).
func pluggedCA(t *testing.T, dir string) []string {
	var args []string
	for _, f := range []string{"root-cert", "intermediate-cert", "intermediate-key"} {
		args = append(args, "--"+f, writeFile(t, dir, f+".pem", "x", 0o600))
	}
	return args
}

// TestDatastoreValidationSaysWhatToFix: each bad datastore configuration
// is refused with a message naming the flag and the fix, and never
// quotes the password of the URL it refuses.
func TestDatastoreValidationSaysWhatToFix(t *testing.T) {
	dir := t.TempDir()
	key := writeFile(t, dir, "log.key", "PRIVATE+KEY+castellan.local/ledger+0+x", 0o600)
	ca := pluggedCA(t, dir)
	good := "postgres://castellan:s3cret@db.example:5432/castellan?sslmode=verify-full"
	subdir := filepath.Join(dir, "subdir")
	if err := os.Mkdir(subdir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown scheme", []string{"--datastore", "mysql://u:s3cret@h/db"}, `--datastore scheme "mysql" is not supported`},
		{"keyword form", []string{"--datastore", "host=h password=s3cret dbname=x"}, "keyword=value connection strings are not accepted"},
		{"bad escape", []string{"--datastore", "postgres://u:s3cret%zz@h/db"}, "percent-encode special characters"},
		{"no host", []string{"--datastore", "postgres://u:s3cret@/db"}, "names no host"},
		{"no database", []string{"--datastore", "postgres://u:s3cret@h:5432"}, "names no database"},
		{"both", []string{"--datastore", good, "--datastore-file", key}, "--datastore and --datastore-file are both set"},
		{"missing DSN file", []string{"--datastore-file", filepath.Join(dir, "nope")}, "--datastore-file: open"},
		{"DSN file is a directory", []string{"--datastore-file", subdir}, "is not a regular file"},
		{"world-readable DSN file", []string{"--datastore-file", writeFile(t, dir, "w", good, 0o644)}, "every user of this host can read it"},
		{"group-writable DSN file", []string{"--datastore-file", writeFile(t, dir, "gw", good, 0o620)}, "users other than its owner can change it"},
		{"empty DSN file", []string{"--datastore-file", writeFile(t, dir, "e", "\n", 0o600)}, "is empty"},
		{"two-line DSN file", []string{"--datastore-file", writeFile(t, dir, "two", good+"\n"+good, 0o600)}, "holds several lines"},
		{"bolt in DSN file", []string{"--datastore-file", writeFile(t, dir, "b", "bolt", 0o600)}, "must hold a postgres:// URL"},
		{"bad URL in DSN file", []string{"--datastore-file", writeFile(t, dir, "m", "mysql://u:s3cret@h/db", 0o600)}, `scheme "mysql"`},
		{"postgres without log key", append([]string{"--datastore", good}, ca...), "--ledger-key-file is required with a PostgreSQL datastore"},
		{"postgres without a plugged-in CA or a KEK", []string{"--datastore", good, "--ledger-key-file", key}, "must all sign with one CA: give --kek-file"},
		{"world-readable KEK", []string{"--kek-file", writeFile(t, dir, "kek644", "x", 0o644)}, "--kek-file"},
		{"postgres in forensic mode", append([]string{"--datastore", good, "--ledger-key-file", key, "--ledger-read-only-forensics"}, ca...), "does not apply to a PostgreSQL datastore"},
		{"world-readable log key", []string{"--ledger-key-file", writeFile(t, dir, "k644", "x", 0o644)}, "--ledger-key-file"},
		{"missing log key", []string{"--ledger-key-file", filepath.Join(dir, "nokey")}, "--ledger-key-file: open"},
	} {
		_, err := Load(tc.args, envOf(nil), io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
			continue
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%s: the error quotes the password: %v", tc.name, err)
		}
	}
}

// TestDatastoreAccepted: bolt by default and by name; PostgreSQL from the
// flag, the environment, the YAML file or a DSN file reached through a
// symlink as in a Kubernetes Secret volume; the unsafe but accepted
// choices give warnings that do not quote the password.
func TestDatastoreAccepted(t *testing.T) {
	dir := t.TempDir()
	key := writeFile(t, dir, "log.key", "k", 0o600)
	ca := pluggedCA(t, dir)
	for _, args := range [][]string{nil, {"--datastore", "bolt"}} {
		cfg, err := Load(args, envOf(nil), io.Discard)
		if kind, _, kerr := cfg.ResolveDatastore(); err != nil || kerr != nil || kind != KindBolt {
			t.Errorf("%v: %v %v %q, want bolt", args, err, kerr, kind)
		}
	}
	verified := "postgres://castellan:s3cret@db.example/castellan?sslmode=verify-full"
	plain := "postgresql://castellan:s3cret@db.example/castellan"
	// A Secret volume: the key is a link to ..data/key, itself a link to
	// the current version's directory.
	version := filepath.Join(dir, "..2026_01_01")
	if err := os.Mkdir(version, 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, version, "dsn", plain+"\n", 0o400)
	if err := os.Symlink(version, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join("..data", "dsn"), filepath.Join(dir, "dsn")); err != nil {
		t.Fatal(err)
	}
	yaml := writeFile(t, dir, "c.yaml", "datastore: "+verified+"\nledger_key_file: "+key+"\n", 0o600)
	base := append([]string{"--ledger-key-file", key}, ca...)
	for _, tc := range []struct {
		name     string
		args     []string
		env      map[string]string
		dsn      string
		warnings []string
	}{
		{"flag, verified TLS", append([]string{"--datastore", verified}, base...), nil, verified, []string{"password is on the command line"}},
		{"flag, unverified TLS", append([]string{"--datastore", plain}, base...), nil, plain, []string{"password is on the command line", `sslmode=""`}},
		{"environment", base, map[string]string{"CASTELLAN_DATASTORE": verified}, verified, nil},
		{"YAML", append([]string{"--config", yaml}, ca...), nil, verified, nil},
		{"Secret volume", append([]string{"--datastore-file", filepath.Join(dir, "dsn")}, base...), nil, plain, []string{"does not verify the server"}},
		{"DSN file from the environment", base, map[string]string{"CASTELLAN_DATASTORE_FILE": filepath.Join(dir, "dsn")}, plain, []string{"does not verify"}},
		{"loopback", append([]string{"--datastore", "postgres://castellan@127.0.0.1:5432/castellan"}, base...), nil, "postgres://castellan@127.0.0.1:5432/castellan", nil},
	} {
		cfg, err := Load(tc.args, envOf(tc.env), io.Discard)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		kind, dsn, err := cfg.ResolveDatastore()
		if err != nil || kind != KindPostgres || dsn != tc.dsn {
			t.Errorf("%s: datastore %q %q %v, want postgres %q", tc.name, kind, dsn, err, tc.dsn)
		}
		if len(cfg.Warnings) != len(tc.warnings) {
			t.Errorf("%s: warnings %q, want %d", tc.name, cfg.Warnings, len(tc.warnings))
			continue
		}
		for i, w := range tc.warnings {
			if !strings.Contains(cfg.Warnings[i], w) || strings.Contains(cfg.Warnings[i], "s3cret") {
				t.Errorf("%s: warning %q, want one containing %q and not the password", tc.name, cfg.Warnings[i], w)
			}
		}
	}
}

// fakeInfo is the os.FileInfo of a file with the given mode and owner.
type fakeInfo struct {
	mode     fs.FileMode
	uid, gid uint32
}

func (f fakeInfo) Name() string       { return "f" }
func (f fakeInfo) Size() int64        { return 1 }
func (f fakeInfo) Mode() fs.FileMode  { return f.mode }
func (f fakeInfo) ModTime() time.Time { return time.Time{} }
func (f fakeInfo) IsDir() bool        { return f.mode.IsDir() }
func (f fakeInfo) Sys() any           { return &syscall.Stat_t{Uid: f.uid, Gid: f.gid} }

// TestSecretFileOwnership: who may own and read a secret file, for a
// process with uid 1000 and groups 1000 and 2000.
func TestSecretFileOwnership(t *testing.T) {
	const euid = 1000
	gids := []int{1000, 2000}
	for _, tc := range []struct {
		name string
		fi   fakeInfo
		want string // "" when accepted
	}{
		{"own, 0600", fakeInfo{0o600, 1000, 1000}, ""},
		{"own, 0400", fakeInfo{0o400, 1000, 5}, ""},
		{"Secret with fsGroup: root, our group, 0440", fakeInfo{0o440, 0, 2000}, ""},
		{"our group, 0640", fakeInfo{0o640, 1000, 1000}, ""},
		{"another user's", fakeInfo{0o600, 1001, 1000}, "owned by uid 1001"},
		{"group we are not in", fakeInfo{0o440, 0, 3000}, "group 3000, which this process is not in"},
		{"world-readable", fakeInfo{0o604, 1000, 1000}, "every user of this host can read it"},
		{"world-writable", fakeInfo{0o602, 1000, 1000}, "can change it"},
		{"group-writable", fakeInfo{0o660, 0, 2000}, "can change it"},
		{"a socket", fakeInfo{fs.ModeSocket | 0o600, 1000, 1000}, "not a regular file"},
	} {
		err := checkSecretMode(tc.fi, "/s", "--datastore-file", euid, gids)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v, want accepted", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}
