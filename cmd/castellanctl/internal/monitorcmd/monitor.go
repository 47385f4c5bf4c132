// Package monitorcmd holds castellanctl's ledger monitor: its flags, the
// exit code of each failure ca/tlog/monitor reports, and the printing of
// the entries that match its filters.
package monitorcmd

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/castellan-dev/castellan/ca/tlog/logentry"
	"github.com/castellan-dev/castellan/ca/tlog/monitor"
	"github.com/castellan-dev/castellan/ca/tlog/monitor/state"
	"github.com/castellan-dev/castellan/cmd/castellanctl/internal/cli"
	"github.com/castellan-dev/castellan/internal/witness"
	"golang.org/x/mod/sumdb/note"
)

// Exit codes of ledger monitor, besides 0, 1 (the log is unreachable, or
// another error) and 2 (usage).
const (
	exitMonitorInvalid = 3 // the log does not verify (as ledger verify)
	exitMonitorFork    = 5 // the log forked or was rolled back
	exitMonitorState   = 6 // the state file is damaged
	exitMonitorLimit   = 7 // a response or a pass exceeded its size or time limit
)

const monitorUsage = `usage: castellanctl [--timeout D] ledger monitor --log-url URL --log-key VKEY --state FILE
         [--spiffe-id-prefix P]... [--node N]... [--witness NAME=URL+VKEY]... [--witness-quorum N]
         [--witness-policy FILE] [--log-origin O] [--follow [--interval 10s]] [-o table|json]

Follows the CA's issuance log over HTTP (C2SP tlog-tiles, /log/ on castellan-server's
--http-listen port) from the checkpoint saved in --state, verifies every checkpoint
(signed by --log-key, cosigned by the witness policy if given), that it extends the
saved one, and every new entry against the signed tree, then prints the new entries
matching the filters and saves the new checkpoint. --timeout bounds each pass.

exit codes: 0 verified, 1 error (log unreachable), 2 usage, 3 the log does not verify,
            5 FORK or ROLLBACK (the log contradicts the saved checkpoint), 6 damaged
            state file, 7 a response or pass exceeded its size or time limit;
            the state is saved only after a verified pass
`

// monitorFlags are the flags of ledger monitor.
type monitorFlags struct {
	url, key, origin, state string
	prefixes, nodes         []string
	witnesses               []string
	quorum                  int
	policyFile              string
	follow                  bool
	interval                time.Duration
	out                     *string
}

// stringsFlag collects a repeated string flag.
type stringsFlag struct{ p *[]string }

func (s stringsFlag) String() string {
	if s.p == nil {
		return ""
	}
	return strings.Join(*s.p, ",")
}

func (s stringsFlag) Set(v string) error { *s.p = append(*s.p, v); return nil }

// Run runs `castellanctl ledger monitor` (monitorUsage).
func Run(ctx context.Context, g *cli.Globals, args []string) error {
	var f monitorFlags
	fs := g.NewFlags("ledger monitor")
	fs.Usage = func() { fmt.Fprint(g.Stderr, monitorUsage); fs.PrintDefaults() }
	fs.StringVar(&f.url, "log-url", os.Getenv("CASTELLAN_LOG_URL"), "the log's URL prefix, e.g. http://ca.example:9090/log/ (env CASTELLAN_LOG_URL)")
	fs.StringVar(&f.key, "log-key", os.Getenv("CASTELLAN_LOG_KEY"), "the log's note verifier key, pinned (ledger checkpoint -o json prints it as verifier_key; env CASTELLAN_LOG_KEY)")
	fs.StringVar(&f.origin, "log-origin", "", "the log's origin line (default: the --log-key's name)")
	fs.StringVar(&f.state, "state", "", "file holding the last verified checkpoint (created on the first run, written atomically)")
	fs.Var(stringsFlag{&f.prefixes}, "spiffe-id-prefix", "report entries whose SPIFFE ID starts with this (repeatable; end it with / to match path segments)")
	fs.Var(stringsFlag{&f.nodes}, "node", "report entries of this node (repeatable); with --spiffe-id-prefix, both must match")
	fs.Var(stringsFlag{&f.witnesses}, "witness", "a witness that must have cosigned each checkpoint, NAME=URL+VKEY (repeatable)")
	fs.IntVar(&f.quorum, "witness-quorum", 0, "how many of the --witness witnesses must cosign (0: all)")
	fs.StringVar(&f.policyFile, "witness-policy", "", "YAML witness policy file; exclusive with --witness")
	fs.BoolVar(&f.follow, "follow", false, "keep following the log every --interval until interrupted")
	fs.DurationVar(&f.interval, "interval", 10*time.Second, "how often to poll with --follow")
	f.out = cli.OutputFlag(fs)
	if err := cli.ParseFlags(fs, args); err != nil {
		return err
	}
	m, err := f.monitor(fs.NArg())
	if err != nil {
		return err
	}
	return runMonitor(ctx, g, m, f)
}

// monitor checks the flags and builds the monitor.
func (f *monitorFlags) monitor(nargs int) (*monitor.Monitor, error) {
	switch {
	case nargs > 0:
		return nil, cli.Usagef("ledger monitor: unexpected arguments")
	case f.url == "" || f.key == "" || f.state == "":
		return nil, cli.Usagef("ledger monitor: --log-url, --log-key and --state are required")
	case f.follow && f.interval <= 0:
		return nil, cli.Usagef("ledger monitor: --interval must be positive")
	}
	if err := cli.CheckOutput("ledger monitor", *f.out); err != nil {
		return nil, err
	}
	u, err := url.Parse(f.url)
	if err != nil {
		return nil, cli.Usagef("ledger monitor: --log-url: %v", err)
	}
	key, err := note.NewVerifier(f.key)
	if err != nil {
		return nil, cli.Usagef("ledger monitor: --log-key %q: %v (want NAME+HASH+KEY as ledger checkpoint -o json prints it)", f.key, err)
	}
	policy, err := witness.PolicyFromFlags(f.policyFile, f.witnesses, f.quorum)
	if err != nil {
		return nil, cli.Usagef("ledger monitor: %v", err)
	}
	m, err := monitor.New(monitor.Config{URL: u, LogKey: key, Origin: f.origin, Policy: policy,
		Filter: monitor.Filter{SPIFFEIDPrefixes: f.prefixes, Nodes: f.nodes}})
	if err != nil {
		return nil, cli.Usagef("ledger %v", err)
	}
	return m, nil
}

// runMonitor runs the monitor until done or interrupted. It is not bound
// by the command's --timeout as a whole: --timeout bounds each pass.
func runMonitor(ctx context.Context, g *cli.Globals, m *monitor.Monitor, f monitorFlags) error {
	ctx, stop := signal.NotifyContext(context.WithoutCancel(ctx), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	p := &matchPrinter{w: g.Stdout, json: *f.out == "json", follow: f.follow}
	err := m.Run(ctx, monitor.RunOptions{StatePath: f.state, Follow: f.follow, Interval: f.interval, StepTimeout: g.Timeout,
		Report:  p.print,
		Stepped: func(res *monitor.Result) { p.summary(g.Stderr, res) },
		Retrying: func(err error) {
			fmt.Fprintf(g.Stderr, "castellanctl: warning: %v; retrying in %s\n", err, f.interval)
		}})
	return monitorExit(err)
}

// monitorError is a failed monitor pass with its exit code.
type monitorError struct {
	err  error
	code int
}

func (e *monitorError) Error() string { return "castellanctl: " + e.err.Error() }
func (e *monitorError) Unwrap() error { return e.err }

// ExitCode is the process exit code.
func (e *monitorError) ExitCode() int { return e.code }

// monitorExit gives err its exit code.
func monitorExit(err error) error {
	code := 1
	switch {
	case err == nil:
		return nil
	case errors.Is(err, monitor.ErrFork):
		code = exitMonitorFork
	case errors.Is(err, monitor.ErrInvalid):
		code = exitMonitorInvalid
	case errors.Is(err, state.ErrDamaged):
		code = exitMonitorState
	case errors.Is(err, monitor.ErrLimit):
		code = exitMonitorLimit
	}
	return &monitorError{err: err, code: code}
}

// matchPrinter prints matching entries as a table (one header per run) or
// as JSON lines.
type matchPrinter struct {
	w      io.Writer
	json   bool
	follow bool // summaries only for steps that found something
	header bool
}

// summary prints what a verified step covered on stderr.
func (p *matchPrinter) summary(stderr io.Writer, res *monitor.Result) {
	if res.Pruned > 0 {
		fmt.Fprintf(stderr, "castellanctl: warning: the CA no longer serves the content of %d of these entries (pruned after their retention period); their hashes are verified, their content was not matched\n", res.Pruned)
	}
	switch {
	case res.To > res.From:
		fmt.Fprintf(stderr, "castellanctl: verified entries %d to %d against the signed checkpoint of size %d: %d matching\n",
			res.From, res.To-1, res.To, res.Matched)
	case !p.follow:
		fmt.Fprintf(stderr, "castellanctl: the log is still at the verified checkpoint of size %d: nothing new\n", res.To)
	}
}

// print prints matching entries.
func (p *matchPrinter) print(es []logentry.Entry) error {
	if p.json {
		enc := json.NewEncoder(p.w)
		for i := range es {
			if err := enc.Encode(entryJSONOf(&es[i])); err != nil {
				return err
			}
		}
		return nil
	}
	if len(es) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(p.w, 0, 4, 2, ' ', 0)
	if !p.header {
		fmt.Fprintln(tw, "INDEX\tKIND\tTIME\tSERIAL\tSPIFFE ID\tNODE\tNOT AFTER")
		p.header = true
	}
	for _, e := range es {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Index, e.Kind, rfc3339(e.Time), cli.OrDash(e.Serial),
			cli.OrDash(e.SPIFFEID), cli.OrDash(e.Node), cli.OrDash(rfc3339(e.NotAfter)))
	}
	return tw.Flush()
}

// entryJSON is one -o json line.
type entryJSON struct {
	Index           uint64 `json:"index"`
	Kind            string `json:"kind"`
	Time            string `json:"time"`
	Serial          string `json:"serial,omitempty"`
	SPIFFEID        string `json:"spiffe_id,omitempty"`
	Node            string `json:"node,omitempty"`
	NotBefore       string `json:"not_before,omitempty"`
	NotAfter        string `json:"not_after,omitempty"`
	PublicKeySHA256 string `json:"public_key_sha256,omitempty"`
	Reason          string `json:"reason,omitempty"`
	Parent          string `json:"parent,omitempty"`
	Cert            string `json:"cert,omitempty"`
}

func entryJSONOf(e *logentry.Entry) entryJSON {
	j := entryJSON{Index: e.Index, Kind: e.Kind, Time: rfc3339(e.Time), Serial: e.Serial, SPIFFEID: e.SPIFFEID,
		Node: e.Node, NotBefore: rfc3339(e.NotBefore), NotAfter: rfc3339(e.NotAfter),
		PublicKeySHA256: e.PublicKeySHA256, Reason: e.Reason, Parent: e.Parent}
	if len(e.Cert) > 0 {
		j.Cert = base64.StdEncoding.EncodeToString(e.Cert)
	}
	return j
}

func rfc3339(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}
