package pgtest

import (
	"context"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/castellan-dev/castellan/internal/testroot"
)

func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func queryString(t *testing.T, c *pgx.Conn, sql string) string {
	t.Helper()
	var s string
	if err := c.QueryRow(context.Background(), sql).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

// The server runs as the postgres OS user (not root), durable, on
// loopback only, and asks for the password.
func TestServerIsRealAndDurable(t *testing.T) {
	s := Start(t)
	c := connect(t, s.NewDatabase(t))
	for setting, want := range map[string]string{
		"fsync": "on", "synchronous_commit": "on", "listen_addresses": "127.0.0.1",
	} {
		if got := queryString(t, c, "SHOW "+setting); got != want {
			t.Errorf("%s = %q, want %q", setting, got, want)
		}
	}
	if queryString(t, c, "SELECT rolsuper::text FROM pg_roles WHERE rolname = current_user") != "true" {
		t.Error("the test role is not a superuser")
	}
	if os.Geteuid() == 0 {
		fi, err := os.Stat(s.dataDir())
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid == 0 {
			t.Error("data directory owned by root: the server must run as the postgres user")
		}
		if st, ok := procStat(s.PID()); !ok || procUID(t, s.PID()) == 0 {
			t.Errorf("postmaster runs as root (stat %v)", st)
		}
	}
	bad := strings.Replace(s.DSN("postgres"), s.Password(), "wrong", 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if c, err := pgx.Connect(ctx, bad); err == nil {
		c.Close(ctx)
		t.Fatal("a wrong password was accepted")
	}
}

func procUID(t *testing.T, pid int) int {
	t.Helper()
	fi, err := os.Stat("/proc/" + strconv.Itoa(pid))
	if err != nil {
		t.Fatal(err)
	}
	return int(fi.Sys().(*syscall.Stat_t).Uid)
}

// Stop ends the postmaster and every backend (a session is open while it
// stops), and Close removes the server's files.
func TestStopLeavesNoProcess(t *testing.T) {
	s, err := New("")
	if err != nil {
		t.Fatal(err)
	}
	c := connect(t, s.DSN("postgres"))
	queryString(t, c, "SELECT 'x'")
	procs := s.Processes()
	if len(procs) < 3 { // postmaster, checkpointer, our backend, ...
		t.Fatalf("processes %v: expected a postmaster and its children", procs)
	}
	dir := s.Dir()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	assertGone(t, procs)
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s left behind: %v", dir, err)
	}
}

func assertGone(t *testing.T, pids []int) {
	t.Helper()
	for _, pid := range pids {
		if st, ok := procStat(pid); ok && st.state != 'Z' {
			t.Errorf("process %d still running after stop", pid)
		}
	}
}

// A killed server loses no committed row and comes back on the same
// port; its backends do not outlive the postmaster.
func TestKillAndRestartKeepCommittedData(t *testing.T) {
	s := Start(t)
	dsn := s.NewDatabase(t)
	c := connect(t, dsn)
	ctx := context.Background()
	if _, err := c.Exec(ctx, "CREATE TABLE t (v int); INSERT INTO t VALUES (42)"); err != nil {
		t.Fatal(err)
	}
	port, procs := s.Port(), s.Processes()
	if err := s.Kill(); err != nil {
		t.Fatal(err)
	}
	assertGone(t, procs)
	if _, err := c.Exec(ctx, "SELECT 1"); err == nil {
		t.Fatal("a session survived its server's death")
	}
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	if s.Port() != port {
		t.Fatalf("port changed across restart: %d -> %d", port, s.Port())
	}
	if got := queryString(t, connect(t, dsn), "SELECT v::text FROM t"); got != "42" {
		t.Fatalf("after crash and restart: %q, want 42", got)
	}
	if err := s.Restart(); err != nil { // a running server: stop, then start
		t.Fatal(err)
	}
	queryString(t, connect(t, dsn), "SELECT v::text FROM t")
}

// Databases from NewDatabase are distinct and dropped at cleanup.
func TestNewDatabaseIsDroppedAtCleanup(t *testing.T) {
	s := Start(t)
	var name string
	t.Run("use", func(t *testing.T) {
		a, b := s.NewDatabase(t), s.NewDatabase(t)
		if a == b {
			t.Fatal("two databases with one DSN")
		}
		name = queryString(t, connect(t, a), "SELECT current_database()")
	})
	got := queryString(t, connect(t, s.DSN("postgres")),
		"SELECT count(*)::text FROM pg_database WHERE datname = '"+name+"'")
	if got != "0" {
		t.Fatalf("database %s not dropped at cleanup", name)
	}
}

func TestBinariesFound(t *testing.T) {
	dir, err := Binaries()
	if err != nil {
		t.Fatal(err)
	}
	for _, tool := range []string{"initdb", "postgres"} {
		if !isExec(dir + "/" + tool) {
			t.Errorf("%s/%s is not executable", dir, tool)
		}
	}
}

// A directory the postgres user cannot reach (t.TempDir is 0700 root) is
// refused with a message saying so, before initdb fails obscurely.
func TestNewRefusesUnreachableDirectory(t *testing.T) {
	testroot.Require(t, "run the server as the postgres user")
	_, err := New(t.TempDir() + "/pg")
	if err == nil || !strings.Contains(err.Error(), "cannot search") {
		t.Fatalf("New in a root-only directory: %v", err)
	}
}
