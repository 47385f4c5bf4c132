package storm

import (
	"context"
	"fmt"
	"math/big"
	"path/filepath"
	"sync"
	"time"

	"github.com/castellan-dev/castellan/agent/cache"
	"github.com/castellan-dev/castellan/agent/client"
	"github.com/castellan-dev/castellan/agent/logcheck"
	"github.com/castellan-dev/castellan/agent/manager"
	"github.com/castellan-dev/castellan/agent/rotate"
	"github.com/castellan-dev/castellan/agent/state"
	"github.com/castellan-dev/castellan/agent/upstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// simAgent is one simulated node agent: the agent's own client, cache and
// manager, wired as cmd/castellan-agent wires them, without the workload
// sockets (nobody fetches during the storm) and with the log policy off.
type simAgent struct {
	node    nodeSpec
	client  *client.Client
	cache   *cache.Cache
	store   *state.Store
	metrics *prometheus.Registry // the client's: retries by code
	rec     *recorder
	old     map[string]*big.Int // entry ID -> serial of the SVID held before the storm

	// Set by watch, read after it returns.
	first, done time.Duration // since the storm began; 0: never
}

// prepareAgent attests the agent with its join token and writes its cache
// as it was at the end of the outage: every entry holds an SVID signed
// 0.6 TTL ago, with the next-rotation time the policy gave it, now past.
func prepareAgent(ctx context.Context, cfg Config, p *pki, node nodeSpec, caAddr, dir string) (*simAgent, error) {
	a := &simAgent{node: node, store: state.NewStore(), metrics: prometheus.NewRegistry(), old: map[string]*big.Int{}}
	var err error
	a.client, err = client.New(client.Config{Address: caAddr, TrustDomain: p.td, Bundle: p.bundle, DataDir: dir, Registry: a.metrics})
	if err != nil {
		return nil, err
	}
	if err := a.client.Bootstrap(ctx, node.token); err != nil {
		a.client.Close()
		return nil, fmt.Errorf("storm: %s: %w", node.name, err)
	}
	if a.cache, err = cache.Open(filepath.Join(dir, "cache.db"), cache.Config{}); err != nil {
		a.client.Close()
		return nil, err
	}
	if err := a.fillCache(cfg, p); err != nil {
		a.close()
		return nil, err
	}
	a.rec = &recorder{ca: a.client, items: map[string]int{}, calls: map[string]int{}, sample: map[string]string{}}
	return a, nil
}

// fillCache stores one old SVID per entry. The agent's identities share
// one key here (only the setup does; every renewal makes a fresh key).
func (a *simAgent) fillCache(cfg Config, p *pki) error {
	key, err := client.NewKey()
	if err != nil {
		return err
	}
	notBefore := time.Now().Add(-cfg.TTL * 6 / 10)
	recs := make([]cache.Record, 0, len(a.node.entries))
	for i, e := range a.node.entries {
		svid, err := p.oldSVID(e.spiffeID, key, notBefore, cfg.TTL)
		if err != nil {
			return err
		}
		leaf := svid.Certificates[0]
		a.old[e.id] = leaf.SerialNumber
		recs = append(recs, cache.Record{
			EntryID: e.id, SVID: svid,
			Selectors:    []state.Selector{{Type: "unix", Value: fmt.Sprintf("uid:%d", 10000+i)}},
			NextRotation: cfg.Policy.RenewAt(notBefore, leaf.NotBefore, leaf.NotAfter),
		})
	}
	return a.cache.Put(p.bundle, recs...)
}

// run runs the agent's manager and its own SVID's renewal until ctx ends.
func (a *simAgent) run(ctx context.Context, policy rotate.Policy) error {
	mgr, err := manager.New(manager.Config{
		CA: a.rec, Cache: a.cache, Store: a.store, TrustDomain: a.client.AgentSVID().ID.TrustDomain(),
		OnBundle: a.client.SetBundle, OnTaints: a.client.Taint, Policy: policy,
		Registry: prometheus.NewRegistry(), LogPolicy: logcheck.Off,
	})
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	wg.Go(func() { _ = a.client.Run(ctx) })
	err = mgr.Run(ctx)
	wg.Wait()
	return err
}

// watch follows what the agent serves and records when it first served a
// renewed SVID and when it served nothing else; done is closed then.
func (a *simAgent) watch(ctx context.Context, start time.Time, done chan<- struct{}) {
	ch, stop := a.store.Watch()
	defer stop()
	for {
		n := a.renewed(a.store.Current())
		if n > 0 && a.first == 0 {
			a.first = time.Since(start)
		}
		if n == len(a.node.entries) {
			a.done = time.Since(start)
			close(done)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-ch:
		}
	}
}

// renewed counts the served identities whose SVID is not the one held
// before the storm.
func (a *simAgent) renewed(s *state.Snapshot) int {
	n := 0
	for _, id := range s.Identities {
		if old, ok := a.old[id.EntryID]; ok && old.Cmp(id.SVID.Certificates[0].SerialNumber) != 0 {
			n++
		}
	}
	return n
}

// check verifies what the agent serves after the storm: one SVID per
// entry, for the entry's SPIFFE ID, new, chained to the trust bundle,
// valid at now for at least half the TTL. It returns the problems found.
func (a *simAgent) check(p *pki, ttl time.Duration, now time.Time) []string {
	var bad []string
	served := map[string]*x509svid.SVID{}
	for _, id := range a.store.Current().Identities {
		served[id.EntryID] = id.SVID
	}
	for _, e := range a.node.entries {
		svid := served[e.id]
		switch {
		case svid == nil:
			bad = append(bad, fmt.Sprintf("%s: entry %s: nothing served", a.node.name, e.id))
			continue
		case svid.ID != e.spiffeID:
			bad = append(bad, fmt.Sprintf("%s: entry %s: serves %s, want %s", a.node.name, e.id, svid.ID, e.spiffeID))
		case a.old[e.id].Cmp(svid.Certificates[0].SerialNumber) == 0:
			bad = append(bad, fmt.Sprintf("%s: entry %s: still the SVID from before the storm", a.node.name, e.id))
		}
		if _, _, err := x509svid.Verify(svid.Certificates, p.bundle, x509svid.WithTime(now)); err != nil {
			bad = append(bad, fmt.Sprintf("%s: entry %s: %v", a.node.name, e.id, err))
		}
		if left := svid.Certificates[0].NotAfter.Sub(now); left < ttl/2 {
			bad = append(bad, fmt.Sprintf("%s: entry %s: valid for only %s more", a.node.name, e.id, left))
		}
	}
	return bad
}

func (a *simAgent) close() {
	_ = a.cache.Close()
	_ = a.client.Close()
}

// recorder is the agent's CA client as the manager sees it, counting the
// outcome of every batch: calls that failed whole, and per-item refusals,
// by gRPC code. It changes nothing.
type recorder struct {
	ca manager.CA

	mu      sync.Mutex
	batches int
	items   map[string]int
	calls   map[string]int
	sample  map[string]string // code -> the first message with it
	slowest time.Duration     // the longest BatchSign call
}

// Sign calls the real client and counts the outcome.
func (r *recorder) Sign(ctx context.Context, entries []upstream.Entry) ([]upstream.Signed, error) {
	start := time.Now()
	res, err := r.ca.Sign(ctx, entries)
	took := time.Since(start)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.batches++
	r.slowest = max(r.slowest, took)
	if err != nil {
		st, _ := status.FromError(err)
		r.calls[st.Code().String()]++
		r.note(st.Code(), err.Error())
		return res, err
	}
	for _, x := range res {
		if x.Err != nil {
			st, _ := status.FromError(x.Err)
			r.items[st.Code().String()]++
			r.note(st.Code(), x.Err.Error())
		}
	}
	return res, err
}

// note keeps the first message seen with code.
func (r *recorder) note(code codes.Code, msg string) {
	if _, ok := r.sample[code.String()]; !ok {
		r.sample[code.String()] = msg
	}
}

// Sync follows the real client's view of the agent.
func (r *recorder) Sync(ctx context.Context, update func(upstream.State)) error {
	return r.ca.Sync(ctx, update)
}
