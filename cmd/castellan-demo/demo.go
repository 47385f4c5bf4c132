package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// nodeName is the node the demo's one agent joins as.
const nodeName = "demo-node"

// config is the launcher's parsed command line.
type config struct {
	dir, binDir                       string
	ttl                               time.Duration
	trustDomain                       string
	serverAddr, serverHTTP, agentHTTP string
	portBase                          int
	reviews                           []string
	readyTimeout                      time.Duration
	// serverArgs and agentArgs are appended to the command lines of
	// castellan-server and castellan-agent (--server-arg, --agent-arg).
	serverArgs, agentArgs []string
}

// ownServerFlags and ownAgentFlags are the flags the demo sets itself:
// passing one again through --server-arg or --agent-arg would silently
// override an address or directory the demo relies on, so it is refused.
var (
	ownServerFlags = []string{"data-dir", "listen", "http-listen", "trust-domain", "default-ttl"}
	ownAgentFlags  = []string{"server-address", "trust-bundle", "join-token-file", "data-dir", "socket", "http-listen", "trust-domain"}
)

// layout names every path under the state directory.
type layout struct {
	dir, build, serverData, agentData, logs string
	bundle, adminSocket, agentSocket        string
	lock, processes                         string
	joinToken                               string // 0600, deleted by the agent once spent
}

func newLayout(dir string) (layout, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return layout{}, fmt.Errorf("castellan-demo: %w", err)
	}
	l := layout{
		dir: abs, build: filepath.Join(abs, "bin"),
		serverData: filepath.Join(abs, "server"), agentData: filepath.Join(abs, "agent"),
		logs: filepath.Join(abs, "logs"), agentSocket: filepath.Join(abs, "agent.sock"),
		lock: filepath.Join(abs, "demo.pid"), processes: filepath.Join(abs, "processes.json"),
		joinToken: filepath.Join(abs, "join-token"),
	}
	l.bundle = filepath.Join(l.serverData, "bundle.pem")
	l.adminSocket = filepath.Join(l.serverData, "admin.sock")
	if len(l.adminSocket) > 100 || len(l.agentSocket) > 100 {
		return layout{}, fmt.Errorf("castellan-demo: state directory %s is too long for Unix socket paths (108 bytes); use a shorter DEMO_DIR", abs)
	}
	return l, nil
}

func (c config) validate() error {
	if c.ttl < 10*time.Second {
		return fmt.Errorf("castellan-demo: --svid-ttl %s is too short; use at least 10s", c.ttl)
	}
	if c.portBase < 1 || c.portBase+5 > 65535 {
		return fmt.Errorf("castellan-demo: --bookinfo-port %d leaves no room for six ports", c.portBase)
	}
	if len(c.reviews) == 0 {
		return errors.New("castellan-demo: --reviews must name at least one version")
	}
	for _, v := range c.reviews {
		if _, err := c.reviewsPort(v); err != nil {
			return err
		}
	}
	if err := checkExtraArgs("--server-arg", "castellan-server", c.serverArgs, ownServerFlags); err != nil {
		return err
	}
	return checkExtraArgs("--agent-arg", "castellan-agent", c.agentArgs, ownAgentFlags)
}

// checkExtraArgs refuses an extra argument that sets one of the demo's own
// flags of cmd.
func checkExtraArgs(flagName, cmd string, args, own []string) error {
	for _, a := range args {
		if !strings.HasPrefix(a, "-") {
			continue // a flag's value given as its own argument
		}
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if slices.Contains(own, name) {
			return fmt.Errorf("castellan-demo: %s %s: the demo sets --%s of %s itself; use the demo's own flags (see -h)", flagName, a, name, cmd)
		}
	}
	return nil
}

func (c config) port(offset int) string { return "127.0.0.1:" + strconv.Itoa(c.portBase+offset) }

// reviewsPort is the port offset of reviews version v (v1 +3, v2 +4, v3 +5).
func (c config) reviewsPort(v string) (string, error) {
	switch v {
	case "v1", "v2", "v3":
		n, _ := strconv.Atoi(v[1:])
		return c.port(2 + n), nil
	}
	return "", fmt.Errorf("castellan-demo: unknown reviews version %q (want v1, v2 or v3)", v)
}

// run is the whole demo: prepare, start, print, wait, stop.
func run(ctx context.Context, cfg config) (err error) {
	if err := cfg.validate(); err != nil {
		return err
	}
	l, err := newLayout(cfg.dir)
	if err != nil {
		return err
	}
	if err := prepare(l); err != nil {
		return err
	}
	defer os.Remove(l.lock)
	bins, err := findBinaries(ctx, cfg.binDir, l.build)
	if err != nil {
		return err
	}
	sup := newSupervisor(l.logs)
	defer func() {
		fmt.Println("stopping Bookinfo, castellan-agent and castellan-server ...")
		if stopErr := sup.stopAll(10 * time.Second); stopErr != nil && err == nil {
			err = stopErr
		}
	}()
	if err := startAll(ctx, cfg, l, bins, sup); err != nil {
		return fmt.Errorf("%w\n(logs are in %s)", err, l.logs)
	}
	if err := writeJSON(l.processes, sup.pids()); err != nil {
		return err
	}
	printBanner(cfg, l, bins)
	select {
	case <-ctx.Done():
		return nil
	case e := <-sup.exits:
		return fmt.Errorf("castellan-demo: %s exited unexpectedly (%v); see %s", e.name, e.err, filepath.Join(l.logs, e.name+".log"))
	}
}

// prepare takes the directory's lock and clears the previous run's state,
// keeping built binaries.
func prepare(l layout) error {
	if err := os.MkdirAll(l.dir, 0o755); err != nil {
		return fmt.Errorf("castellan-demo: %w", err)
	}
	if b, err := os.ReadFile(l.lock); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid != os.Getpid() && syscall.Kill(pid, 0) == nil {
			return fmt.Errorf("castellan-demo: a demo (pid %d) is already running in %s; stop it first or set DEMO_DIR", pid, l.dir)
		}
	}
	if err := os.WriteFile(l.lock, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return fmt.Errorf("castellan-demo: %w", err)
	}
	for _, p := range []string{l.serverData, l.agentData, l.logs, l.agentSocket, l.processes, l.joinToken} {
		if err := os.RemoveAll(p); err != nil {
			return fmt.Errorf("castellan-demo: reset state: %w", err)
		}
	}
	for _, d := range []string{l.serverData, l.agentData, l.logs} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("castellan-demo: %w", err)
		}
	}
	return nil
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("castellan-demo: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("castellan-demo: %w", err)
	}
	return nil
}

func printBanner(cfg config, l layout, bins binaries) {
	fmt.Printf(`
Bookinfo is running over mutual TLS with identities issued by Castellan.
SVID lifetime %s; the agent rotates each certificate at about half of it.

  Product page:         http://%s/productpage
  Workload API + SDS:   %s
                        (try: SPIFFE_ENDPOINT_SOCKET=unix://%s)
  Issued identities:    %s --admin-socket %s certs list
  Registration entries: %s --admin-socket %s entry list
  Logs:                 %s

Press Ctrl-C to stop.
`, cfg.ttl, cfg.port(0), l.agentSocket, l.agentSocket, bins.ctl, l.adminSocket, bins.ctl, l.adminSocket, l.logs)
}

// waitFor polls check every 100ms until it succeeds, ctx ends, timeout
// passes or a child exits.
func waitFor(ctx context.Context, sup *supervisor, timeout time.Duration, what string, check func() error) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		if last = check(); last == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("castellan-demo: %s not ready after %s: %w", what, timeout, last)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("castellan-demo: interrupted while waiting for %s: %w", what, ctx.Err())
		case e := <-sup.exits:
			return fmt.Errorf("castellan-demo: %s exited (%v) while waiting for %s", e.name, e.err, what)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// socketReady reports whether a Unix socket at path accepts connections.
func socketReady(path string) error {
	c, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		return err
	}
	return c.Close()
}

// fileReady reports whether path exists and is not empty.
func fileReady(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if st.Size() == 0 {
		return fmt.Errorf("%s is empty", path)
	}
	return nil
}

// httpOK GETs url and requires a 200.
func httpOK(client *http.Client, url string) error {
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}
