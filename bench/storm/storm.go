// Package storm simulates a rotation storm at a scale one machine cannot
// host as real nodes: many node agents, each holding many identities, come
// back after an outage longer than half an SVID's lifetime, so that every
// identity is due for renewal at once, and renew them all from one CA.
//
// Everything on the renewal path is the project's own code, unmodified:
//   - the CA is the castellan-server binary, in its own process (so its
//     CPU and memory are its own), serving real gRPC over mutual TLS on
//     127.0.0.1 with its bbolt ledger synced on every commit, its issuance
//     quotas on, sized for the agents' identities as an operator would;
//   - each simulated agent is the agent's client (agent/client: mutual
//     TLS, failover and retry), cache (agent/cache: bbolt, synced) and
//     manager (agent/manager with the agent/rotate policy: batches of due
//     identities, jitter, backoff), wired as cmd/castellan-agent wires
//     them, without the workload sockets.
//
// Only the state before the storm is written directly, since obtaining it
// through the CA would take as long as the storm itself: the registration
// entries and join tokens go into the CA's registry through ca/authz and
// ca/authn before the server starts, and each agent's cache holds, for
// every entry, an SVID the CA's (plug-in) intermediate signed 0.6 TTL ago,
// with the next-rotation time the policy gave it. The agents then attest
// with their join tokens, and the storm begins when they all start.
//
// A storm ends when every agent serves a renewed SVID for every entry (as
// its state store shows, after the cache holds it durably). Run reports how
// long that took, each agent's wait, every refusal by gRPC code, and the
// CA's CPU, peak resident memory and peak heap.
package storm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/castellan-dev/castellan/agent/rotate"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Config describes a storm. ServerBin and Dir are required.
type Config struct {
	// ServerBin is the castellan-server binary.
	ServerBin string
	// Dir is an empty directory for the CA's and agents' files.
	Dir string
	// Agents and PerAgent: how many agents, and identities each (0: 100
	// and 1,000).
	Agents, PerAgent int
	// TTL is the SVIDs' lifetime, the CA's default TTL (0: 1h).
	TTL time.Duration
	// QuotaNodeBurst and QuotaNodePerHour are the CA's node quota (0: sized
	// for PerAgent identities as ca/quota sizes its default for 256: a
	// burst of twice PerAgent and PerAgent x 4 per TTL).
	QuotaNodeBurst, QuotaNodePerHour int
	// Policy is the agents' rotation policy (zero: castellan-agent's).
	Policy rotate.Policy
	// Timeout bounds the storm (0: 10 minutes).
	Timeout time.Duration
	// Logf, if set, receives progress lines.
	Logf func(format string, args ...any)
}

func (c Config) withDefaults() Config {
	if c.Agents == 0 {
		c.Agents = 100
	}
	if c.PerAgent == 0 {
		c.PerAgent = 1000
	}
	if c.TTL == 0 {
		c.TTL = time.Hour
	}
	if c.QuotaNodeBurst == 0 {
		c.QuotaNodeBurst = 2 * c.PerAgent
	}
	if c.QuotaNodePerHour == 0 {
		c.QuotaNodePerHour = int(float64(4*c.PerAgent) * float64(time.Hour) / float64(c.TTL))
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Minute
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	return c
}

// Result is what a storm measured.
type Result struct {
	Agents, PerAgent int
	// Renewed counts the identities served renewed when the storm ended.
	Renewed int
	// AllRenewed is how long until every identity was served renewed (the
	// last agent's Done); 0 if the storm timed out first.
	AllRenewed time.Duration
	// Waits are each agent's wait, in agent order.
	Waits []AgentWait
	// Batches counts the agents' BatchSign calls.
	Batches int
	// ItemErrors counts per-request refusals inside batch answers, and
	// CallErrors batch calls that failed whole, by gRPC code.
	ItemErrors, CallErrors map[string]int
	// Samples holds one refusal or failure message per gRPC code.
	Samples map[string]string
	// SlowestBatch is the longest BatchSign call an agent made.
	SlowestBatch time.Duration
	// Retries counts the calls the agents' client retried by itself (on
	// Unavailable, or ResourceExhausted with a retry delay), by code.
	Retries map[string]int
	// CACPU is the CPU time the CA process used during the storm,
	// AgentsCPU that of this process (the simulated agents).
	CACPU, AgentsCPU time.Duration
	// CAPeakRSS is the CA's peak resident memory during the storm, and
	// CAPeakHeap its highest in-use Go heap sampled every 100ms (bytes).
	CAPeakRSS, CAPeakHeap uint64
	// CAStartRSS is the CA's resident memory when the storm began (its
	// registry, ledger and caches already loaded).
	CAStartRSS uint64
	// Problems lists what the final check found wrong with what the agents
	// serve (at most 20).
	Problems []string
}

// AgentWait is one agent's view of the storm, since it began.
type AgentWait struct {
	// First is when the agent first served a renewed SVID, Done when it
	// served only renewed ones (0: never).
	First, Done time.Duration
}

// Run sets up and runs one storm, and stops everything it started.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg = cfg.withDefaults()
	if cfg.ServerBin == "" || cfg.Dir == "" {
		return nil, errors.New("storm: ServerBin and Dir are required")
	}
	td := spiffeid.RequireTrustDomainFromString("storm.test")
	p, err := newPKI(cfg.Dir, td)
	if err != nil {
		return nil, err
	}
	dd, err := dataDir(cfg.Dir)
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	nodes, err := writeRegistry(ctx, dd, td, cfg.Agents, cfg.PerAgent)
	if err != nil {
		return nil, err
	}
	cfg.Logf("storm: registry of %d agents x %d entries written in %s", cfg.Agents, cfg.PerAgent, time.Since(t0).Round(time.Millisecond))
	ca, err := startCA(ctx, serverArgs{bin: cfg.ServerBin, dataDir: dd, td: td.Name(), ttl: cfg.TTL,
		burst: cfg.QuotaNodeBurst, perHour: cfg.QuotaNodePerHour, pkiFlags: p.flags()})
	if err != nil {
		return nil, err
	}
	defer ca.stop()
	t0 = time.Now()
	agents, err := prepareAgents(ctx, cfg, p, nodes, ca.addr)
	defer func() {
		for _, a := range agents {
			a.close()
		}
	}()
	if err != nil {
		return nil, err
	}
	cfg.Logf("storm: %d agents attested, caches written in %s", len(agents), time.Since(t0).Round(time.Millisecond))
	return runStorm(ctx, cfg, p, ca, agents)
}

// prepareAgents prepares every agent, two at a time (the setup is CPU
// bound: one certificate signature per cached SVID).
func prepareAgents(ctx context.Context, cfg Config, p *pki, nodes []nodeSpec, caAddr string) ([]*simAgent, error) {
	agents := make([]*simAgent, len(nodes))
	errs := make([]error, len(nodes))
	work := make(chan int)
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for i := range work {
				dir := filepath.Join(cfg.Dir, "agents", nodes[i].name)
				if errs[i] = os.MkdirAll(dir, 0o700); errs[i] == nil {
					agents[i], errs[i] = prepareAgent(ctx, cfg, p, nodes[i], caAddr, dir)
				}
			}
		})
	}
	for i := range nodes {
		work <- i
	}
	close(work)
	wg.Wait()
	out := slices.DeleteFunc(agents, func(a *simAgent) bool { return a == nil })
	return out, errors.Join(errs...)
}

// runStorm starts every agent at once and waits until each serves only
// renewed SVIDs, or the timeout.
func runStorm(ctx context.Context, cfg Config, p *pki, ca *caProcess, agents []*simAgent) (*Result, error) {
	if err := ca.resetPeakRSS(); err != nil {
		return nil, fmt.Errorf("storm: reset the CA's peak RSS: %w", err)
	}
	startRSS, err := ca.rss()
	if err != nil {
		return nil, err
	}
	caCPU0, err := ca.cpu()
	if err != nil {
		return nil, err
	}
	selfCPU0 := selfCPU()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var heap heapSampler
	var wg sync.WaitGroup
	wg.Go(func() { heap.run(sctx, "http://"+ca.httpAddr+"/metrics", 100*time.Millisecond) })
	runErrs := make(chan error, len(agents))
	dones := make([]chan struct{}, len(agents))
	start := time.Now()
	for i, a := range agents {
		dones[i] = make(chan struct{})
		wg.Go(func() { a.watch(sctx, start, dones[i]) })
		wg.Go(func() {
			if err := a.run(sctx, cfg.Policy); err != nil {
				runErrs <- fmt.Errorf("storm: %s: %w", a.node.name, err)
			}
		})
	}
	waitErr := waitAll(ctx, dones, cfg.Timeout, runErrs)
	res := &Result{Agents: cfg.Agents, PerAgent: cfg.PerAgent, ItemErrors: map[string]int{}, CallErrors: map[string]int{},
		Samples: map[string]string{}, Retries: map[string]int{}}
	caCPU1, err1 := ca.cpu()
	res.CACPU, res.AgentsCPU = caCPU1-caCPU0, selfCPU()-selfCPU0
	rss, err2 := ca.peakRSS()
	res.CAPeakRSS, res.CAStartRSS = rss, startRSS
	cancel()
	wg.Wait()
	res.CAPeakHeap = heap.peak.Load()
	res.collect(agents, p, cfg.TTL)
	return res, errors.Join(waitErr, err1, err2)
}

// waitAll waits for every done channel, an agent's error, the timeout or ctx.
func waitAll(ctx context.Context, dones []chan struct{}, timeout time.Duration, errs <-chan error) error {
	deadline := time.After(timeout)
	for _, d := range dones {
		select {
		case <-d:
		case err := <-errs:
			return err
		case <-deadline:
			return fmt.Errorf("storm: not every identity was renewed within %s", timeout)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// collect gathers the agents' waits, counts and final check into r.
func (r *Result) collect(agents []*simAgent, p *pki, ttl time.Duration) {
	now := time.Now()
	for _, a := range agents {
		r.Waits = append(r.Waits, AgentWait{First: a.first, Done: a.done})
		r.Renewed += a.renewed(a.store.Current())
		if a.done > r.AllRenewed {
			r.AllRenewed = a.done
		}
		a.rec.mu.Lock()
		r.Batches += a.rec.batches
		for k, v := range a.rec.items {
			r.ItemErrors[k] += v
		}
		for k, v := range a.rec.calls {
			r.CallErrors[k] += v
		}
		for k, v := range a.rec.sample {
			r.Samples[k] = v
		}
		r.SlowestBatch = max(r.SlowestBatch, a.rec.slowest)
		a.rec.mu.Unlock()
		addRetries(r.Retries, a.metrics)
		if len(r.Problems) < 20 {
			r.Problems = append(r.Problems, a.check(p, ttl, now)...)
		}
	}
	if r.Renewed < r.Agents*r.PerAgent {
		r.AllRenewed = 0
	}
	if len(r.Problems) > 20 {
		r.Problems = r.Problems[:20]
	}
}

// addRetries adds castellan_agent_ca_retries_total by code from reg.
func addRetries(into map[string]int, reg *prometheus.Registry) {
	mfs, err := reg.Gather()
	if err != nil {
		return
	}
	for _, mf := range mfs {
		if mf.GetName() != "castellan_agent_ca_retries_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "code" && m.GetCounter().GetValue() > 0 {
					into[l.GetValue()] += int(m.GetCounter().GetValue())
				}
			}
		}
	}
}

// WorstWait returns the longest and the median of the agents' Done.
func (r *Result) WorstWait() (worst, median time.Duration) {
	d := make([]time.Duration, 0, len(r.Waits))
	for _, w := range r.Waits {
		d = append(d, w.Done)
	}
	if len(d) == 0 {
		return 0, 0
	}
	slices.Sort(d)
	return d[len(d)-1], d[len(d)/2]
}

// WorstFirst returns the longest any agent waited for its first renewed SVID.
func (r *Result) WorstFirst() time.Duration {
	var w time.Duration
	for _, a := range r.Waits {
		w = max(w, a.First)
	}
	return w
}

// String is a one-paragraph summary.
func (r *Result) String() string {
	worst, median := r.WorstWait()
	var b strings.Builder
	fmt.Fprintf(&b, "%d agents x %d identities: %d renewed, all in %s (%.0f SVIDs/s); agent done: median %s, worst %s; worst first SVID %s; %d batches\n",
		r.Agents, r.PerAgent, r.Renewed, r.AllRenewed.Round(time.Millisecond), float64(r.Renewed)/max(r.AllRenewed.Seconds(), 1e-9),
		median.Round(time.Millisecond), worst.Round(time.Millisecond), r.WorstFirst().Round(time.Millisecond), r.Batches)
	fmt.Fprintf(&b, "slowest batch call %s\n", r.SlowestBatch.Round(time.Millisecond))
	fmt.Fprintf(&b, "CA: %.1f CPU-s (%.0f CPU-µs per SVID), RSS %d MiB at the start, peak RSS %d MiB, peak heap %d MiB; agents' process: %.1f CPU-s\n",
		r.CACPU.Seconds(), float64(r.CACPU.Microseconds())/float64(max(r.Renewed, 1)), r.CAStartRSS>>20, r.CAPeakRSS>>20, r.CAPeakHeap>>20, r.AgentsCPU.Seconds())
	fmt.Fprintf(&b, "refused items %v, failed calls %v, client retries %v", r.ItemErrors, r.CallErrors, r.Retries)
	for code, msg := range r.Samples {
		fmt.Fprintf(&b, "\n  %s: %s", code, msg)
	}
	for _, p := range r.Problems {
		fmt.Fprintf(&b, "\n  problem: %s", p)
	}
	return b.String()
}

// selfCPU is this process's CPU time (user + system).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
