// Command castellan-agent is Castellan's node agent: it attests the
// workloads on its node, obtains their SVIDs from the CA, keeps them in a
// bbolt cache, rotates them and serves them over Envoy SDS and the SPIFFE
// Workload API on a Unix socket.
//
// Every flag has an environment equivalent, CASTELLAN_AGENT_<FLAG> with
// dashes as underscores; a flag on the command line wins. The join token is
// the exception: it is never taken from the command line (see
// jointoken.go), only from --join-token-file or CASTELLAN_AGENT_JOIN_TOKEN.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/castellan-dev/castellan/agent/attest"
	"github.com/castellan-dev/castellan/agent/endpoints"
	"github.com/castellan-dev/castellan/internal/version"
)

// config is the agent's configuration, read once here and passed down.
type config struct {
	ServerAddress string
	TrustBundle   string
	JoinToken     string // from CASTELLAN_AGENT_JOIN_TOKEN only
	JoinTokenFile string
	argvToken     argvJoinToken
	DataDir       string
	Socket        string
	HTTPListen    string
	TrustDomain   string
	LogLevel      string
	Attestor      string
	NodeName      string
	K8sTokenFile  string
	Kubeconfig    string
	Limits        endpoints.Limits
	HolderMaxAge  time.Duration
}

func flagSet(cfg *config, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("castellan-agent", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&cfg.ServerAddress, "server-address", "127.0.0.1:8443", "CA address, host:port")
	fs.StringVar(&cfg.TrustBundle, "trust-bundle", "", "PEM roots that verify the CA at bootstrap (the server's <data-dir>/bundle.pem)")
	fs.StringVar(&cfg.JoinTokenFile, "join-token-file", "", "file holding a one-time join token (castellanctl token create --out FILE): a regular file owned by the agent's user, mode 0600 or stricter; "+
		"read once, deleted after a successful join; needed only without a valid agent SVID in --data-dir. Or set "+joinTokenEnv)
	fs.Var(&cfg.argvToken, "join-token", "refused: a token on the command line is readable by every local user; use --join-token-file or "+joinTokenEnv)
	fs.StringVar(&cfg.DataDir, "data-dir", "", "directory for cache.db and the agent's own SVID (created 0700)")
	fs.StringVar(&cfg.Socket, "socket", "/run/castellan/agent.sock", "Unix socket serving SDS and the Workload API")
	fs.StringVar(&cfg.HTTPListen, "http-listen", "127.0.0.1:9091", "HTTP address for /metrics, /healthz and /readyz")
	fs.StringVar(&cfg.TrustDomain, "trust-domain", "cluster.local", "SPIFFE trust domain")
	fs.StringVar(&cfg.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&cfg.Attestor, "attestor", attestorUnix, "workload attestor: unix (registration entries) or k8s (one identity per pod on --node-name)")
	fs.StringVar(&cfg.NodeName, "node-name", "", "k8s: the node this agent runs on")
	fs.StringVar(&cfg.K8sTokenFile, "k8s-token-file", "", "k8s: projected service-account token (audience castellan-ca) used to attest the agent")
	fs.StringVar(&cfg.Kubeconfig, "kubeconfig", "", "k8s: kubeconfig file (empty: in-cluster)")
	fs.IntVar(&cfg.Limits.MaxConnsPerCaller, "max-conns-per-caller", endpoints.DefaultMaxConnsPerCaller, "socket connections one uid (one pod with --attestor k8s) may hold open")
	fs.IntVar(&cfg.Limits.MaxStreamsPerCaller, "max-calls-per-caller", endpoints.DefaultMaxStreamsPerCaller, "SDS and Workload API calls one uid (one pod with --attestor k8s) may hold open")
	fs.DurationVar(&cfg.Limits.IdleTimeout, "idle-timeout", endpoints.DefaultIdleTimeout, "close a socket connection with no open call for this long")
	fs.DurationVar(&cfg.HolderMaxAge, "holder-scan-max-age", attest.DefaultHolderMaxAge, "how old the /proc scan proving no other process holds a workload's connection may be at a call")
	return fs
}

// envName returns the environment variable of a flag.
func envName(flagName string) string {
	return "CASTELLAN_AGENT_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// loadConfig reads the environment, then args, and validates.
func loadConfig(args []string, getenv func(string) string, out io.Writer) (config, error) {
	var cfg config
	fs := flagSet(&cfg, out)
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name == "join-token" {
			return // the environment's token is read below, never as the flag
		}
		if v := getenv(envName(f.Name)); v != "" {
			if err := fs.Set(f.Name, v); err != nil && envErr == nil {
				envErr = fmt.Errorf("%s=%q: %w", envName(f.Name), v, err)
			}
		}
	})
	if envErr != nil {
		return config{}, envErr
	}
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	cfg.JoinToken = strings.TrimSpace(getenv(joinTokenEnv))
	switch {
	case cfg.argvToken.given:
		return config{}, errJoinTokenOnArgv
	case cfg.JoinToken != "" && cfg.JoinTokenFile != "":
		return config{}, fmt.Errorf("both --join-token-file and %s are set; give the join token once", joinTokenEnv)
	}
	switch {
	case cfg.DataDir == "":
		return config{}, errors.New("--data-dir is required (the agent keeps its cache and its own SVID there)")
	case cfg.Socket == "":
		return config{}, errors.New("--socket must not be empty")
	}
	return cfg, validateK8s(cfg)
}

func newLogger(level string, w io.Writer) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l})), nil
}

func main() {
	if version.Print("castellan-agent", os.Args[1:], os.Stdout) {
		return
	}
	cfg, err := loadConfig(os.Args[1:], os.Getenv, os.Stderr)
	os.Unsetenv(joinTokenEnv) // read once; not passed on to any child
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "castellan-agent:", err)
		os.Exit(2)
	}
	log, err := newLogger(cfg.LogLevel, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "castellan-agent:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, log); err != nil {
		log.Error("castellan-agent stopped", "error", err.Error())
		os.Exit(1)
	}
}
