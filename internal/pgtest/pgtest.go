// Package pgtest runs a real PostgreSQL server for tests: the machine's
// own binaries (Debian's postgresql package, installed with apt-get when
// missing and the test runs as root), initdb into a temporary directory,
// a free 127.0.0.1 port, a unix socket in that directory, fsync on. The
// server runs as the unprivileged `postgres` OS user when the test runs
// as root (PostgreSQL refuses to run as root), as the test's own user
// otherwise. It is a child process of the test: Stop, Kill and the
// cleanup registered by Start leave no process behind.
//
// Clients log in as a superuser role with a password, so DSNs are
// ordinary postgres://user:pass@127.0.0.1:port/db?sslmode=disable URLs.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/internal/freeport"
)

// Superuser is the name of the role tests log in as.
const Superuser = "castellan"

// Bounds on every wait.
const (
	readyTimeout = 60 * time.Second
	fastTimeout  = 15 * time.Second // pg_ctl stop -m fast: SIGINT
	quitTimeout  = 10 * time.Second // -m immediate: SIGQUIT
	orphanWait   = 10 * time.Second // backends leaving after a SIGKILLed postmaster
)

// Server is one PostgreSQL server (a postmaster and its backends).
type Server struct {
	bin      string // directory of initdb and postgres
	dir      string // root of the server's files
	ownDir   bool   // dir was made by New and is removed by Close
	port     int
	password string
	cred     *syscall.Credential // the postgres OS user, nil: our own user

	mu   sync.Mutex
	cmd  *exec.Cmd     // running postmaster, nil when stopped
	done chan struct{} // closed when cmd has been waited for
	seq  int           // databases created by NewDatabase
}

// Start starts a server for t, stopped and removed by t.Cleanup. It fails
// t (never skips) when no PostgreSQL can be found or installed.
func Start(t testing.TB) *Server {
	t.Helper()
	s, err := New("")
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("pgtest: %v", err)
		}
	})
	return s
}

// New initialises a cluster in dir and starts its server. dir is created
// if needed and must be searchable by the postgres OS user along its
// whole path (a directory under /tmp is); "" means a new directory under
// os.TempDir(), removed by Close. Call Close when done.
func New(dir string) (*Server, error) {
	bin, err := Binaries()
	if err != nil {
		return nil, err
	}
	s := &Server{bin: bin, dir: dir}
	if err := s.prepareDir(); err != nil {
		return nil, err
	}
	if err := s.initdb(); err != nil {
		s.removeDir()
		return nil, err
	}
	if err := s.startOnFreePort(); err != nil {
		s.removeDir()
		return nil, err
	}
	return s, nil
}

func (s *Server) prepareDir() error {
	if os.Geteuid() == 0 {
		cred, err := postgresUser()
		if err != nil {
			return err
		}
		s.cred = cred
	}
	if s.dir == "" {
		d, err := os.MkdirTemp("", "pgtest-")
		if err != nil {
			return fmt.Errorf("temporary directory: %w", err)
		}
		s.dir, s.ownDir = d, true
	} else if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return err
	}
	if s.cred != nil {
		if err := os.Chown(s.dir, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			return fmt.Errorf("give %s to the postgres user: %w", s.dir, err)
		}
		return searchable(filepath.Dir(s.dir), s.cred)
	}
	return nil
}

// searchable checks that the user of cred can reach dir: every directory
// on its path must let it search (x). t.TempDir() does not (0700, root).
func searchable(dir string, cred *syscall.Credential) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for d := abs; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		mode := fi.Mode().Perm()
		ok := mode&0o001 != 0 || st.Uid == cred.Uid && mode&0o100 != 0 || st.Gid == cred.Gid && mode&0o010 != 0
		if !ok {
			return fmt.Errorf("the postgres user cannot search %s (mode %v): use a directory under %s, or \"\"", d, mode, os.TempDir())
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

// postgresUser is the credential of the `postgres` OS user, which the
// Debian package creates.
func postgresUser() (*syscall.Credential, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("the postgres OS user (created by Debian's postgresql package): %w", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("the postgres OS user: %w", err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
}

func (s *Server) removeDir() {
	if s.ownDir {
		os.RemoveAll(s.dir)
	}
}

func (s *Server) dataDir() string { return filepath.Join(s.dir, "data") }
func (s *Server) sockDir() string { return filepath.Join(s.dir, "sock") }
func (s *Server) logFile() string { return filepath.Join(s.dir, "postgres.log") }

// initdb creates the cluster: a superuser with a random password,
// password authentication for every connection, a server listening on
// loopback only with fsync and synchronous commit on.
func (s *Server) initdb() error {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return err
	}
	s.password = hex.EncodeToString(b[:])
	pwfile := filepath.Join(s.dir, "pwfile")
	if err := s.writeOwned(pwfile, s.password+"\n"); err != nil {
		return err
	}
	defer os.Remove(pwfile)
	if err := s.mkdirOwned(s.sockDir()); err != nil {
		return err
	}
	out, err := s.run(filepath.Join(s.bin, "initdb"), "-D", s.dataDir(), "-U", Superuser,
		"--pwfile="+pwfile, "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C", "--no-sync")
	if err != nil {
		return fmt.Errorf("initdb: %w\n%s", err, out)
	}
	return nil
}

// args are the server's settings: loopback only, the socket in the
// server's directory, durable commits.
func (s *Server) args() []string {
	set := func(k, v string) []string { return []string{"-c", k + "=" + v} }
	a := []string{"-D", s.dataDir()}
	for _, kv := range [][2]string{
		{"listen_addresses", "127.0.0.1"}, {"port", strconv.Itoa(s.port)},
		{"unix_socket_directories", s.sockDir()}, {"fsync", "on"},
		{"synchronous_commit", "on"}, {"full_page_writes", "on"},
		{"shared_buffers", "32MB"}, {"max_connections", "100"},
	} {
		a = append(a, set(kv[0], kv[1])...)
	}
	return a
}

func (s *Server) writeOwned(path, content string) error {
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		return err
	}
	return s.chown(path)
}

func (s *Server) mkdirOwned(path string) error {
	if err := os.Mkdir(path, 0o700); err != nil {
		return err
	}
	return s.chown(path)
}

func (s *Server) chown(path string) error {
	if s.cred == nil {
		return nil
	}
	return os.Chown(path, int(s.cred.Uid), int(s.cred.Gid))
}

// run runs a PostgreSQL tool as the server's OS user, bounded in time.
func (s *Server) run(name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	cmd.Dir = s.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	return cmd.CombinedOutput()
}

// startOnFreePort starts the server on a free loopback port, trying
// another if a different process took it in the meantime.
func (s *Server) startOnFreePort() error {
	var err error
	for range 3 {
		var port int
		if port, err = freePort(); err != nil {
			return err
		}
		s.port = port
		if err = s.start(); err == nil {
			return nil
		}
	}
	return err
}

func freePort() (int, error) {
	p, err := freeport.Port()
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	return p, nil
}

// Port is the server's TCP port on 127.0.0.1.
func (s *Server) Port() int { return s.port }

// Password is the superuser's password.
func (s *Server) Password() string { return s.password }

// Dir is the directory holding the server's data, socket and log.
func (s *Server) Dir() string { return s.dir }

// DSN is the URL of database db on the server, as the superuser.
func (s *Server) DSN(db string) string {
	u := url.URL{Scheme: "postgres", User: url.UserPassword(Superuser, s.password),
		Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)), Path: "/" + db,
		RawQuery: "sslmode=disable"}
	return u.String()
}

// Log returns the server's log so far (for failure messages).
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.logFile())
	return string(b)
}

func logTail(log string) string {
	lines := strings.Split(strings.TrimSpace(log), "\n")
	return strings.Join(lines[max(0, len(lines)-15):], "\n")
}
