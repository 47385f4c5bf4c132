// Command castellan-agent is Castellan's node agent: it attests the
// workloads on its node, obtains their SVIDs from the CA, keeps them in a
// bbolt cache, rotates them and serves them over Envoy SDS and the SPIFFE
// Workload API on a Unix socket.
//
// Every flag has an environment equivalent, CASTELLAN_AGENT_<FLAG> with
// dashes as underscores, and a key of the YAML file given with --config,
// the flag's name with underscores; the command line wins over the
// environment, which wins over the file. The join token is
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
	"github.com/castellan-dev/castellan/agent/client/caconn"
	"github.com/castellan-dev/castellan/agent/endpoints"
	"github.com/castellan-dev/castellan/agent/logcheck"
	"github.com/castellan-dev/castellan/internal/version"
)

// config is the agent's configuration, read once here and passed down.
// Every field is a flag (--server-address), an environment variable
// (CASTELLAN_AGENT_SERVER_ADDRESS) and a key of the YAML file given with
// --config (server_address); see config.go.
type config struct {
	ServerAddresses []string
	FailoverTimeout time.Duration
	TrustBundle     string
	JoinToken       string // from CASTELLAN_AGENT_JOIN_TOKEN only
	JoinTokenFile   string
	argvToken       argvJoinToken
	DataDir         string
	Socket          string
	HTTPListen      string
	TrustDomain     string
	LogLevel        string
	Attestor        string
	NodeName        string
	K8sTokenFile    string
	Kubeconfig      string
	Limits          endpoints.Limits
	HolderMaxAge    time.Duration
	Log             logConfig
}

func defaultConfig() config {
	return config{
		ServerAddresses: []string{"127.0.0.1:8443"},
		FailoverTimeout: caconn.DefaultFailoverTimeout,
		Socket:          "/run/castellan/agent.sock",
		HTTPListen:      "127.0.0.1:9091",
		TrustDomain:     "cluster.local",
		LogLevel:        "info",
		Attestor:        attestorUnix,
		Limits: endpoints.Limits{
			MaxConnsPerCaller:   endpoints.DefaultMaxConnsPerCaller,
			MaxStreamsPerCaller: endpoints.DefaultMaxStreamsPerCaller,
			IdleTimeout:         endpoints.DefaultIdleTimeout,
		},
		HolderMaxAge: attest.DefaultHolderMaxAge,
		Log:          logConfig{Wait: logcheck.DefaultWait},
	}
}

// flagSet registers every flag on cfg, with cfg's values as defaults.
func flagSet(cfg *config, configPath *string, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("castellan-agent", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(configPath, "config", "", "YAML configuration file: keys are the flag names with _ for - (server_address: [a:8443, b:8443]); the environment and the command line override it")
	fs.Var(&listFlag{p: &cfg.ServerAddresses}, "server-address", "CA address, host:port (repeatable; the environment takes a comma-separated list): "+
		"one name is resolved in DNS and every address it has is used (a headless Service; dns:///name:port says the same), several addresses are balanced round-robin; "+
		"a call that an endpoint fails with Unavailable is retried on another, and every endpoint must present the CA's SVID")
	fs.DurationVar(&cfg.FailoverTimeout, "server-failover-timeout", cfg.FailoverTimeout, "how long one call to the CA keeps trying other endpoints after an endpoint failed it with Unavailable")
	fs.StringVar(&cfg.TrustBundle, "trust-bundle", cfg.TrustBundle, "PEM roots that verify the CA at bootstrap (the server's <data-dir>/bundle.pem)")
	fs.StringVar(&cfg.JoinTokenFile, "join-token-file", cfg.JoinTokenFile, "file holding a one-time join token (castellanctl token create --out FILE): a regular file owned by the agent's user, mode 0600 or stricter; "+
		"read once, deleted after a successful join; needed only without a valid agent SVID in --data-dir. Or set "+joinTokenEnv)
	fs.Var(&cfg.argvToken, "join-token", "refused: a token on the command line is readable by every local user; use --join-token-file or "+joinTokenEnv)
	fs.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "directory for cache.db and the agent's own SVID (created 0700)")
	fs.StringVar(&cfg.Socket, "socket", cfg.Socket, "Unix socket serving SDS and the Workload API")
	fs.StringVar(&cfg.HTTPListen, "http-listen", cfg.HTTPListen, "HTTP address for /metrics, /healthz and /readyz")
	fs.StringVar(&cfg.TrustDomain, "trust-domain", cfg.TrustDomain, "SPIFFE trust domain")
	fs.StringVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "log level: debug, info, warn or error")
	fs.StringVar(&cfg.Attestor, "attestor", cfg.Attestor, "workload attestor: unix (registration entries) or k8s (one identity per pod on --node-name)")
	fs.StringVar(&cfg.NodeName, "node-name", cfg.NodeName, "k8s: the node this agent runs on")
	fs.StringVar(&cfg.K8sTokenFile, "k8s-token-file", cfg.K8sTokenFile, "k8s: projected service-account token (audience castellan-ca) used to attest the agent")
	fs.StringVar(&cfg.Kubeconfig, "kubeconfig", cfg.Kubeconfig, "k8s: kubeconfig file (empty: in-cluster)")
	fs.IntVar(&cfg.Limits.MaxConnsPerCaller, "max-conns-per-caller", cfg.Limits.MaxConnsPerCaller, "socket connections one uid (one pod with --attestor k8s) may hold open")
	fs.IntVar(&cfg.Limits.MaxStreamsPerCaller, "max-calls-per-caller", cfg.Limits.MaxStreamsPerCaller, "SDS and Workload API calls one uid (one pod with --attestor k8s) may hold open")
	fs.DurationVar(&cfg.Limits.IdleTimeout, "idle-timeout", cfg.Limits.IdleTimeout, "close a socket connection with no open call for this long")
	fs.DurationVar(&cfg.HolderMaxAge, "holder-scan-max-age", cfg.HolderMaxAge, "how old the /proc scan proving no other process holds a workload's connection may be at a call")
	logFlags(fs, &cfg.Log)
	return fs
}

// envName returns the environment variable of a flag.
func envName(flagName string) string {
	return "CASTELLAN_AGENT_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// loadConfig reads the YAML file (--config or CASTELLAN_AGENT_CONFIG), then
// the environment, then args, each overriding the one before, and
// validates. A list (--server-address) given by a later source replaces
// the earlier one.
func loadConfig(args []string, getenv func(string) string, out io.Writer) (config, error) {
	var path string
	scratch := defaultConfig()
	if err := flagSet(&scratch, &path, out).Parse(args); err != nil {
		return config{}, err
	}
	if scratch.argvToken.given {
		return config{}, errJoinTokenOnArgv
	}
	if path == "" {
		path = getenv(envName("config"))
	}
	cfg := defaultConfig()
	fs := flagSet(&cfg, new(string), out)
	if path != "" {
		if err := applyYAML(fs, path); err != nil {
			return config{}, err
		}
	}
	if err := applyEnv(fs, getenv); err != nil {
		return config{}, err
	}
	startSource(fs)
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	cfg.JoinToken = strings.TrimSpace(getenv(joinTokenEnv))
	if cfg.JoinToken != "" && cfg.JoinTokenFile != "" {
		return config{}, fmt.Errorf("both --join-token-file and %s are set; give the join token once", joinTokenEnv)
	}
	switch {
	case cfg.DataDir == "":
		return config{}, errors.New("--data-dir is required (the agent keeps its cache and its own SVID there)")
	case cfg.Socket == "":
		return config{}, errors.New("--socket must not be empty")
	case len(cfg.ServerAddresses) == 0:
		return config{}, errors.New("--server-address is empty; give the CA's address, host:port")
	case cfg.FailoverTimeout < 0:
		return config{}, fmt.Errorf("--server-failover-timeout %s is negative; give a duration such as 10s", cfg.FailoverTimeout)
	}
	if _, _, err := cfg.Log.mode(); err != nil {
		return config{}, err
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
