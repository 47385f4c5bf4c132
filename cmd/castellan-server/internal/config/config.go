// Package config reads and checks castellan-server's configuration: each
// setting is a flag (--trust-domain), an environment variable
// (CASTELLAN_TRUST_DOMAIN) and a key of the YAML file given with --config
// (trust_domain); flags win over the environment, which wins over the
// file. Load returns it validated, every problem named with what to fix.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/castellan-dev/castellan/ca/authn"
	"github.com/castellan-dev/castellan/ca/authority"
	"github.com/castellan-dev/castellan/ca/server/admission"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.yaml.in/yaml/v3"
)

// Config is the server's configuration. Each field is a flag
// (--trust-domain), an environment variable (CASTELLAN_TRUST_DOMAIN) and a
// key of the YAML file given with --config (trust_domain). Flags win over
// the environment, which wins over the file.
type Config struct {
	TrustDomain      string        `yaml:"trust_domain"`
	DataDir          string        `yaml:"data_dir"`
	Listen           string        `yaml:"listen"`
	HTTPListen       string        `yaml:"http_listen"`
	DefaultTTL       time.Duration `yaml:"default_ttl"`
	MaxTTL           time.Duration `yaml:"max_ttl"`
	AgentTTL         time.Duration `yaml:"agent_ttl"`
	RootCert         string        `yaml:"root_cert"`
	IntermediateCert string        `yaml:"intermediate_cert"`
	IntermediateKey  string        `yaml:"intermediate_key"`
	// KEKFile, PublishDelay and PrepareAt drive CA rotation (castellan-server's authority.go):
	// the key sealing the authorities' keys in the journal, how long a new
	// root is published before it signs, and when the next authority is
	// prepared (a fraction of the active one's lifetime).
	KEKFile      string        `yaml:"kek_file"`
	PublishDelay time.Duration `yaml:"publish_delay"`
	PrepareAt    float64       `yaml:"prepare_at"`
	AdminIDs     []string      `yaml:"admin_ids"`
	// ServerNames are DNS names and IP addresses in the server's own
	// certificate, for clients that verify it by host name (Istio's).
	ServerNames []string `yaml:"server_names"`
	Kubeconfig  string   `yaml:"kubeconfig"`
	K8sAgentSA  string   `yaml:"k8s_agent_sa"`
	// K8sBundleConfigMaps publishes the bundle in every namespace.
	K8sBundleConfigMaps bool `yaml:"k8s_bundle_configmaps"`
	// IstioAPI serves istio.v1.auth.IstioCertificateService on --listen.
	IstioAPI bool `yaml:"istio_api"`
	// IstioTrustedNodeSAs may use ImpersonatedIdentity (ztunnel).
	IstioTrustedNodeSAs []string `yaml:"istio_trusted_node_sas"`
	LogLevel            string   `yaml:"log_level"`
	// Issuance quotas, the ledger's disk reserve and forensic mode
	// (quota.go here, forensic.go in castellan-server).
	QuotaNodeBurst      int      `yaml:"quota_node_burst"`
	QuotaNodePerHour    int      `yaml:"quota_node_per_hour"`
	QuotaIdentityPerTTL int      `yaml:"quota_identity_per_ttl"`
	LedgerDiskReserve   ByteSize `yaml:"ledger_disk_reserve"`
	// Admission control (ca/server/admission): CSRs worked on at once
	// (0: unbounded) and how long a call may wait for room.
	MaxCSRsInFlight         int           `yaml:"max_csrs_in_flight"`
	AdmissionWait           time.Duration `yaml:"admission_wait"`
	LedgerReadOnlyForensics bool          `yaml:"ledger_read_only_forensics"`
	// Datastore is where the CA keeps its state: "" or "bolt" (files in
	// DataDir) or a postgres:// URL (dsn.go here, datastore.go in castellan-server);
	// DatastoreFile holds that URL instead (a mounted Secret).
	Datastore     string `yaml:"datastore"`
	DatastoreFile string `yaml:"datastore_file"`
	// LedgerKeyFile is the log's note signing key, shared by replicas.
	LedgerKeyFile string `yaml:"ledger_key_file"`
	// The log's origin and witnesses (witness.go).
	Witness `yaml:",inline"`

	// Warnings are what Load found unsafe but accepted; the server logs
	// them.
	Warnings []string `yaml:"-"`
}

// Default is the configuration without file, environment or flags.
func Default() Config {
	return Config{
		TrustDomain: "cluster.local",
		DataDir:     "/var/lib/castellan",
		Listen:      "127.0.0.1:8443",
		HTTPListen:  "127.0.0.1:9090",
		DefaultTTL:  time.Hour,
		MaxTTL:      24 * time.Hour,
		AgentTTL:    time.Hour,
		ServerNames: []string{"localhost", "127.0.0.1"},
		LogLevel:    "info",

		LedgerDiskReserve: defaultDiskReserve,
		MaxCSRsInFlight:   admission.DefaultCapacity(),
		AdmissionWait:     admission.DefaultWait,
	}
}

// listFlag is a repeatable string flag.
type listFlag struct{ p *[]string }

func (l listFlag) String() string {
	if l.p == nil {
		return ""
	}
	return strings.Join(*l.p, ",")
}

func (l listFlag) Set(v string) error {
	*l.p = append(*l.p, v)
	return nil
}

func flagSet(cfg *Config, configPath *string, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("castellan-server", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(configPath, "config", "", "YAML configuration file (keys are the flag names with _ for -)")
	fs.StringVar(&cfg.TrustDomain, "trust-domain", cfg.TrustDomain, "SPIFFE trust domain")
	fs.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "directory for the CA keys, databases and admin socket (mode 0700)")
	fs.StringVar(&cfg.Listen, "listen", cfg.Listen, "gRPC (TLS) listen address for agents and admins")
	fs.StringVar(&cfg.HTTPListen, "http-listen", cfg.HTTPListen, "HTTP listen address for /metrics, /healthz and /readyz")
	fs.DurationVar(&cfg.DefaultTTL, "default-ttl", cfg.DefaultTTL, "lifetime of a workload SVID when the request asks for none")
	fs.DurationVar(&cfg.MaxTTL, "max-ttl", cfg.MaxTTL, "longest SVID lifetime a request may ask for")
	fs.DurationVar(&cfg.AgentTTL, "agent-ttl", cfg.AgentTTL, "lifetime of agent SVIDs (and of the server's own SVID)")
	fs.StringVar(&cfg.RootCert, "root-cert", "", "PEM root certificate(s) of a plugged-in CA")
	fs.StringVar(&cfg.IntermediateCert, "intermediate-cert", "", "PEM intermediate certificate (chain) of a plugged-in CA")
	fs.StringVar(&cfg.IntermediateKey, "intermediate-key", "", "PEM private key of the plugged-in intermediate")
	fs.StringVar(&cfg.KEKFile, "kek-file", cfg.KEKFile, "key-encryption key sealing the CA authorities' private keys in the journal (32 bytes: raw, hex or base64); empty: authority.kek in --data-dir, generated on first start with a bbolt datastore; replicas sharing PostgreSQL must all mount the same file")
	fs.DurationVar(&cfg.PublishDelay, "publish-delay", cfg.PublishDelay, "how long a new root is in every trust bundle before an authority under it may sign, so every agent holds it first (0: --max-ttl + 5m)")
	fs.Float64Var(&cfg.PrepareAt, "prepare-at", cfg.PrepareAt, "fraction of the active authority's lifetime after which the next one is prepared, between 0 and 1 (0: 0.5)")
	fs.Var(listFlag{&cfg.AdminIDs}, "admin-id", "SPIFFE ID allowed to call the admin API over mTLS (repeatable)")
	fs.Var(listFlag{&cfg.ServerNames}, "server-name", "DNS name or IP address put in the server's own certificate next to its SPIFFE ID, for clients that verify the CA by host name such as istio-agent and ztunnel (repeatable; replaces the default localhost and 127.0.0.1; on Kubernetes pass the Service DNS names)")
	fs.StringVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "log level: debug, info, warn or error")
	fs.StringVar(&cfg.Kubeconfig, "kubeconfig", cfg.Kubeconfig, "kubeconfig for Kubernetes mode (empty: in-cluster)")
	fs.StringVar(&cfg.K8sAgentSA, "k8s-agent-sa", cfg.K8sAgentSA, "Kubernetes mode: the service account (namespace/name) whose pod-bound tokens may attest agents")
	fs.BoolVar(&cfg.IstioAPI, "istio-api", cfg.IstioAPI, "serve Istio's CA API (istio.v1.auth.IstioCertificateService) on --listen for istio-agent and ztunnel: callers authenticate with a Kubernetes token of audience istio-ca (needs --kubeconfig or in-cluster) or a client SVID")
	fs.Var(listFlag{&cfg.IstioTrustedNodeSAs}, "istio-trusted-node-sa", "with --istio-api: a service account (namespace/name, e.g. istio-system/ztunnel) whose pod-bound tokens may request identities of pods on their node with ImpersonatedIdentity (repeatable)")
	fs.BoolVar(&cfg.K8sBundleConfigMaps, "k8s-bundle-configmaps", cfg.K8sBundleConfigMaps, "Kubernetes mode: publish the trust bundle as ConfigMap castellan-ca-root-cert (key root-cert.pem) in every namespace")
	fs.IntVar(&cfg.QuotaNodeBurst, "quota-node-burst", cfg.QuotaNodeBurst, "workload certificates one node may get at once (0: 512, for 256 identities renewed twice)")
	fs.IntVar(&cfg.QuotaNodePerHour, "quota-node-per-hour", cfg.QuotaNodePerHour, "workload certificates one node may get per hour, sustained (0: 256 identities x 4 per --default-ttl, 1024 for 1h)")
	fs.IntVar(&cfg.QuotaIdentityPerTTL, "quota-identity-per-ttl", cfg.QuotaIdentityPerTTL, "certificates one identity on one node may get per lifetime of its certificates (0: 8); a revocation refills it")
	fs.IntVar(&cfg.MaxCSRsInFlight, "max-csrs-in-flight", cfg.MaxCSRsInFlight, "workload CSRs the CA works on at once, over all callers (default: 256 per CPU); a call that finds no room within --admission-wait is refused with ResourceExhausted and a retry delay, which agents honour (0: unbounded)")
	fs.DurationVar(&cfg.AdmissionWait, "admission-wait", cfg.AdmissionWait, "how long a signing call may wait for room under --max-csrs-in-flight before it is refused, and never more than half the call's remaining deadline")
	fs.Var(&cfg.LedgerDiskReserve, "ledger-disk-reserve", "free space to leave on the ledger's filesystem: below it issuance stops with an error and castellan_ledger_disk_reserve_breached is 1 (e.g. 512MiB; 0: none)")
	fs.StringVar(&cfg.Datastore, "datastore", cfg.Datastore, "where the CA keeps its state (ledger, join tokens, entries): bolt for files in --data-dir (one replica; the default), or postgres://USER@HOST:PORT/DATABASE?sslmode=verify-full for a PostgreSQL database shared by every replica; keep the password out of the command line with --datastore-file or CASTELLAN_DATASTORE")
	fs.StringVar(&cfg.DatastoreFile, "datastore-file", cfg.DatastoreFile, "file holding the postgres:// URL of --datastore (e.g. a mounted Kubernetes Secret); it must not be readable by other users")
	fs.StringVar(&cfg.LedgerKeyFile, "ledger-key-file", cfg.LedgerKeyFile, "the issuance log's signing key (a note signer key, from `castellanctl ledger keygen`), the same file for every replica; required with a PostgreSQL datastore (bolt: default ledger.db.key in --data-dir, generated on first start)")
	fs.BoolVar(&cfg.LedgerReadOnlyForensics, "ledger-read-only-forensics", cfg.LedgerReadOnlyForensics, "open a ledger that fails its integrity check read-only, serve the audit API on the admin socket and issue nothing (gRPC port not served)")
	witnessFlags(fs, &cfg.Witness)
	return fs
}

// envName returns the environment variable of a flag.
func envName(flagName string) string {
	return "CASTELLAN_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// ErrUsage marks errors in the command line itself.
var ErrUsage = errors.New("usage")

// Load builds the configuration from the YAML file, the environment
// and args, in increasing precedence, and validates it. Flag errors and
// usage go to out.
func Load(args []string, getenv func(string) string, out io.Writer) (Config, error) {
	var path string
	scratch := Default()
	fs := flagSet(&scratch, &path, out)
	if err := fs.Parse(args); err != nil {
		return Config{}, fmt.Errorf("%w: %w", ErrUsage, err)
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("%w: unexpected arguments %q", ErrUsage, fs.Args())
	}
	onCmdLine := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { onCmdLine[f.Name] = true })
	if path == "" {
		path = getenv(envName("config"))
	}

	cfg := Default()
	if path != "" {
		if err := readYAML(path, &cfg); err != nil {
			return Config{}, err
		}
	}
	fs = flagSet(&cfg, new(string), out)
	if err := applyEnv(fs, &cfg, getenv, onCmdLine); err != nil {
		return Config{}, err
	}
	if err := fs.Parse(args); err != nil {
		return Config{}, fmt.Errorf("%w: %w", ErrUsage, err)
	}
	if err := cfg.validate(); err != nil {
		return Config{}, err
	}
	if kind, dsn, err := cfg.ResolveDatastore(); err == nil && kind == KindPostgres {
		cfg.Warnings = dsnWarnings(dsn, onCmdLine["datastore"])
	}
	return cfg, nil
}

func readYAML(path string, cfg *Config) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("castellan-server: config file: %w", err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("castellan-server: config file %s: %w (keys are the flag names with _ for -, e.g. trust_domain)", path, err)
	}
	return nil
}

// applyEnv sets every flag not given on the command line from its
// CASTELLAN_* environment variable (comma-separated for list flags), and
// empties the list flags the command line gives, so that fs.Parse(args)
// after it replaces rather than extends them.
func applyEnv(fs *flag.FlagSet, cfg *Config, getenv func(string) string, onCmdLine map[string]bool) error {
	lists := map[string]*[]string{
		"admin-id": &cfg.AdminIDs, "istio-trusted-node-sa": &cfg.IstioTrustedNodeSAs, "server-name": &cfg.ServerNames,
	}
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		v := getenv(envName(f.Name))
		if v == "" || onCmdLine[f.Name] || f.Name == "config" || envErr != nil {
			return
		}
		if list, ok := lists[f.Name]; ok {
			*list = strings.Split(v, ",")
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			envErr = fmt.Errorf("castellan-server: %s=%q: %w", envName(f.Name), v, err)
		}
	})
	for name, list := range lists {
		if onCmdLine[name] {
			*list = nil
		}
	}
	return envErr
}

// validate checks the configuration and says what to fix: every problem,
// not only the first.
func (c Config) validate() error {
	var errs []error
	for _, check := range []func() []error{
		c.checkIdentity, c.checkTTLs, c.checkPluginCA, c.checkRotation, c.checkKubernetes,
		c.checkOthers, c.checkDatastore,
	} {
		errs = append(errs, check()...)
	}
	if len(errs) > 0 {
		return fmt.Errorf("castellan-server: invalid configuration:\n  %w", joinLines(errs))
	}
	return nil
}

// problems collects configuration errors.
type problems []error

func (p *problems) add(format string, args ...any) { *p = append(*p, fmt.Errorf(format, args...)) }

// checkIdentity checks the trust domain, the data directory, the listen
// addresses, the admin IDs and the server names.
func (c Config) checkIdentity() []error {
	var bad problems
	td, err := spiffeid.TrustDomainFromString(c.TrustDomain)
	if err != nil {
		bad.add("--trust-domain %q is invalid: %v (e.g. cluster.local)", c.TrustDomain, err)
	}
	if c.DataDir == "" {
		bad.add("--data-dir is required")
	}
	for name, addr := range map[string]string{"--listen": c.Listen, "--http-listen": c.HTTPListen} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			bad.add("%s %q is not HOST:PORT: %v", name, addr, err)
		}
	}
	for _, s := range c.AdminIDs {
		id, err := spiffeid.FromString(s)
		switch {
		case err != nil:
			bad.add("--admin-id %q is not a SPIFFE ID: %v", s, err)
		case !td.IsZero() && !id.MemberOf(td):
			bad.add("--admin-id %q is not in trust domain %q", s, td)
		}
	}
	if _, err := authority.ParseServerNames(c.ServerNames); err != nil {
		bad.add("--server-name: %v", err)
	}
	return bad
}

// checkTTLs checks the SVID lifetimes against each other.
func (c Config) checkTTLs() []error {
	var bad problems
	switch {
	case c.DefaultTTL <= 0 || c.MaxTTL <= 0 || c.AgentTTL <= 0:
		bad.add("--default-ttl, --max-ttl and --agent-ttl must be positive (e.g. 1h)")
	case c.DefaultTTL > c.MaxTTL:
		bad.add("--default-ttl %s exceeds --max-ttl %s", c.DefaultTTL, c.MaxTTL)
	case c.AgentTTL > c.MaxTTL:
		bad.add("--agent-ttl %s exceeds --max-ttl %s", c.AgentTTL, c.MaxTTL)
	}
	return bad
}

// checkPluginCA checks that a plug-in CA names all three files, and that
// they exist.
func (c Config) checkPluginCA() []error {
	var bad problems
	files := 0
	for name, f := range map[string]string{"--root-cert": c.RootCert, "--intermediate-cert": c.IntermediateCert, "--intermediate-key": c.IntermediateKey} {
		if f == "" {
			continue
		}
		files++
		if _, err := os.Stat(f); err != nil {
			bad.add("%s: %v", name, err)
		}
	}
	if files != 0 && files != 3 {
		bad.add("a plugged-in CA needs all of --root-cert, --intermediate-cert and --intermediate-key")
	}
	return bad
}

// checkKubernetes checks the service accounts of the Kubernetes and Istio
// options.
func (c Config) checkKubernetes() []error {
	var bad problems
	if c.K8sAgentSA != "" {
		if _, _, err := authn.ParseServiceAccount(c.K8sAgentSA); err != nil {
			bad.add("--k8s-agent-sa: %v", err)
		}
	}
	if len(c.IstioTrustedNodeSAs) > 0 && !c.IstioAPI {
		bad.add("--istio-trusted-node-sa needs --istio-api")
	}
	for _, sa := range c.IstioTrustedNodeSAs {
		if _, _, err := authn.ParseServiceAccount(sa); err != nil {
			bad.add("--istio-trusted-node-sa: %v", err)
		}
	}
	return bad
}

// checkOthers checks the log level, the quotas, admission and the witnesses.
func (c Config) checkOthers() []error {
	var bad problems
	if _, err := ParseLevel(c.LogLevel); err != nil {
		bad.add("%v", err)
	}
	if err := c.checkQuota(); err != nil {
		bad.add("%v", err)
	}
	if c.MaxCSRsInFlight < 0 {
		bad.add("--max-csrs-in-flight is %d; it must not be negative (0: unbounded)", c.MaxCSRsInFlight)
	}
	if c.AdmissionWait <= 0 {
		bad.add("--admission-wait is %s; it must be positive (e.g. 2s)", c.AdmissionWait)
	}
	if err := c.Witness.validate(); err != nil {
		bad.add("%v", err)
	}
	return bad
}

func joinLines(errs []error) error {
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	return errors.New(strings.Join(msgs, "\n  "))
}

// ParseLevel parses --log-level.
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("--log-level %q is invalid; use debug, info, warn or error", s)
	}
	return l, nil
}

// checkRotation validates the rotation flags; the authority package checks
// the publish delay against the intermediate's lifetime, and the KEK file,
// at start.
func (c Config) checkRotation() []error {
	var errs []error
	if c.PublishDelay < 0 {
		errs = append(errs, fmt.Errorf("--publish-delay %s must not be negative (0: --max-ttl + 5m)", c.PublishDelay))
	}
	if c.PrepareAt != 0 && !(c.PrepareAt > 0 && c.PrepareAt < 1) {
		errs = append(errs, fmt.Errorf("--prepare-at %v must be between 0 and 1, e.g. 0.5 to prepare the next authority at half the active one's lifetime", c.PrepareAt))
	}
	return errs
}
