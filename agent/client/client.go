// Package client is the node agent's connection to the Castellan CA: it
// bootstraps the agent's own SVID with a join token, keeps it on disk so a
// restart needs no new token, renews it at half its lifetime, and makes
// every later call over mutual TLS with it. To the agent's manager it is
// the CA (manager.CA), in Go values (upstream.go): Sync turns the
// SyncAgent stream into upstream.State values, Sign makes the keys and
// CSRs of a batch and returns verified SVIDs.
//
// The CA may have several endpoints (replicas), reached, balanced and
// failed over by agent/client/caconn. Each endpoint must prove it is the
// CA with an SVID for spiffe://<td>/castellan/server chained to the trust
// bundle.
package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/castellan-dev/castellan/agent/client/caconn"
	"github.com/castellan-dev/castellan/agent/rotate"
	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/internal/clock"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
)

// ErrNoAgentSVID means the agent has no usable SVID of its own and was not
// given a join token to obtain one.
var ErrNoAgentSVID = errors.New("client: no agent SVID")

// Config configures a Client.
type Config struct {
	// Addresses of the CA (see --server-address): one host:port, whose
	// every DNS address is used; one dns:///host:port; or several
	// host:port. Calls are balanced round-robin over the endpoints that
	// are up, and fail over to another when one fails.
	Addresses []string
	// Address is a shorthand for Addresses with one element.
	Address string
	// FailoverTimeout bounds how long a unary call keeps trying other CA
	// endpoints after its first attempt failed with Unavailable (or
	// ResourceExhausted with a retry delay); 0 means
	// caconn.DefaultFailoverTimeout, and a negative value makes one
	// attempt per call. The call's context may end it sooner. Retries wait on Clock.
	FailoverTimeout time.Duration
	// Registry receives castellan_agent_ca_failovers_total,
	// castellan_agent_ca_retries_total and
	// castellan_agent_ca_handshake_failures_total; nil registers none.
	Registry prometheus.Registerer
	// TrustDomain of the CA and the agent.
	TrustDomain spiffeid.TrustDomain
	// Bundle holds the roots that verify the CA at bootstrap (the
	// --trust-bundle file). Later bundles come from SetBundle.
	Bundle *x509bundle.Bundle
	// DataDir holds the agent's SVID and key (agent.pem, 0600).
	DataDir string
	// Clock and Policy time the agent SVID's renewal; zero values mean the
	// wall clock and the default policy.
	Clock  clock.Clock
	Policy rotate.Policy
	// Logger receives the client's logs; nil discards them.
	Logger *slog.Logger
}

// Client talks to the CA. It is safe for concurrent use.
type Client struct {
	cfg      Config
	dialer   *caconn.Dialer
	serverID spiffeid.ID
	log      *slog.Logger

	mu       sync.Mutex
	svid     *x509svid.SVID
	received time.Time // when svid was obtained; zero if loaded from disk
	bundle   *x509bundle.Bundle
	conn     *grpc.ClientConn
	taint    agentTaint // the agent SVID under a tainted authority (taint.go)

	// bootstrapped is closed once the agent holds its SVID (Sync waits
	// for it).
	bootstrapped  chan struct{}
	bootstrapDone sync.Once
}

// New returns a client and loads the agent SVID persisted in DataDir, if
// any. It does not contact the CA.
func New(cfg Config) (*Client, error) {
	if cfg.DataDir == "" || cfg.TrustDomain.IsZero() {
		return nil, errors.New("client: Addresses, DataDir and TrustDomain are required")
	}
	if cfg.Address != "" {
		cfg.Addresses = append([]string{cfg.Address}, cfg.Addresses...)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.System{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	d, err := caconn.New(caconn.Config{Addresses: cfg.Addresses, FailoverTimeout: cfg.FailoverTimeout,
		Registry: cfg.Registry, Clock: cfg.Clock, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	c := &Client{
		cfg:      cfg,
		dialer:   d,
		serverID: spiffeid.RequireFromPath(cfg.TrustDomain, "/castellan/server"),
		log:      cfg.Logger,
		bundle:   cfg.Bundle,
		taint:    agentTaint{wake: make(chan struct{}, 1)},

		bootstrapped: make(chan struct{}),
	}
	svid, err := loadSVID(c.svidPath())
	switch {
	case err == nil:
		c.svid = svid
	case !errors.Is(err, errNotFound):
		c.log.Warn("ignoring unreadable agent SVID", "path", c.svidPath(), "error", err.Error())
	}
	return c, nil
}

func (c *Client) svidPath() string { return filepath.Join(c.cfg.DataDir, "agent.pem") }

// Bootstrap makes sure the agent holds a valid SVID: the persisted one if it
// has not expired, or else a new one obtained with joinToken. Without a
// token and without a valid SVID it returns an error wrapping
// ErrNoAgentSVID that tells the operator what to do; a token the CA
// refuses is an error wrapping ErrTokenRefused.
func (c *Client) Bootstrap(ctx context.Context, joinToken string) error {
	svid, ok := c.usePersisted()
	if ok {
		return nil
	}
	if joinToken == "" {
		if svid != nil {
			return fmt.Errorf("%w: agent SVID expired at %s; start the agent with a new join token (--join-token-file or CASTELLAN_AGENT_JOIN_TOKEN)",
				ErrNoAgentSVID, svid.Certificates[0].NotAfter.UTC().Format(time.RFC3339))
		}
		return fmt.Errorf("%w: none in %s; start the agent with a join token (--join-token-file or CASTELLAN_AGENT_JOIN_TOKEN)", ErrNoAgentSVID, c.cfg.DataDir)
	}
	return tokenRefused(c.attest(ctx, &cav1.AttestAgentRequest{
		Attestation: &cav1.AttestAgentRequest_JoinToken{JoinToken: joinToken}}, "join token"))
}

// usePersisted returns the persisted agent SVID and whether it is still
// valid; if it is, the agent is bootstrapped.
func (c *Client) usePersisted() (*x509svid.SVID, bool) {
	svid := c.AgentSVID()
	if svid == nil || !c.cfg.Clock.Now().Before(svid.Certificates[0].NotAfter) {
		return svid, false
	}
	c.log.Info("using persisted agent SVID", "spiffe_id", svid.ID.String(), "not_after", svid.Certificates[0].NotAfter)
	c.markBootstrapped()
	return svid, true
}

// attest exchanges a node attestation (how names it in errors and logs)
// for an agent SVID over server-only TLS.
func (c *Client) attest(ctx context.Context, att *cav1.AttestAgentRequest, how string) error {
	key, csr, err := newCSR(spiffeid.ID{})
	if err != nil {
		return err
	}
	att.Csr = csr
	conn, err := c.dialer.Dial(tlsconfig.TLSClientConfig(c, tlsconfig.AuthorizeID(c.serverID)))
	if err != nil {
		return err
	}
	defer conn.Close()
	resp, err := cav1.NewCertificateAuthorityServiceClient(conn).AttestAgent(ctx, att)
	if err != nil {
		return fmt.Errorf("client: attest with %s: %w", how, err)
	}
	svid, err := svidFromProto(resp.Svid, key)
	if err != nil {
		return err
	}
	if b, err := bundleFromProto(resp.Bundle); err == nil {
		c.SetBundle(b)
	}
	if err := c.storeSVID(svid); err != nil {
		return err
	}
	c.log.Info("attested with "+how, "spiffe_id", svid.ID.String(), "not_after", svid.Certificates[0].NotAfter)
	c.markBootstrapped()
	return nil
}

// markBootstrapped records that the agent holds its SVID.
func (c *Client) markBootstrapped() { c.bootstrapDone.Do(func() { close(c.bootstrapped) }) }

// storeSVID persists svid, makes it current and replaces the connection so
// that new calls present it.
func (c *Client) storeSVID(svid *x509svid.SVID) error {
	if err := saveSVID(c.svidPath(), svid); err != nil {
		return err
	}
	c.mu.Lock()
	c.svid, c.received = svid, c.cfg.Clock.Now()
	old := c.conn
	c.conn = nil
	c.mu.Unlock()
	if old != nil {
		_ = old.Close() // open streams end; their owners reconnect
	}
	return nil
}

// receivedAt returns when svid was obtained, if it is the current one and
// was obtained by this process.
func (c *Client) receivedAt(svid *x509svid.SVID) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.svid != svid {
		return time.Time{}
	}
	return c.received
}

// AgentSVID returns the agent's current SVID, or nil.
func (c *Client) AgentSVID() *x509svid.SVID {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.svid
}

// SetBundle replaces the roots that verify the CA.
func (c *Client) SetBundle(b *x509bundle.Bundle) {
	if b == nil {
		return
	}
	c.mu.Lock()
	c.bundle = b
	c.mu.Unlock()
}

// GetX509SVID implements x509svid.Source with the agent SVID.
func (c *Client) GetX509SVID() (*x509svid.SVID, error) {
	if s := c.AgentSVID(); s != nil {
		return s, nil
	}
	return nil, ErrNoAgentSVID
}

// GetX509BundleForTrustDomain implements x509bundle.Source.
func (c *Client) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.bundle == nil || td != c.cfg.TrustDomain {
		return nil, fmt.Errorf("client: no trust bundle for %q", td)
	}
	return c.bundle, nil
}

// ca returns a CA stub on the mTLS connection, dialing it if needed.
func (c *Client) ca() (cav1.CertificateAuthorityServiceClient, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.svid == nil {
		return nil, ErrNoAgentSVID
	}
	if c.conn == nil {
		conn, err := c.dialer.Dial(tlsconfig.MTLSClientConfig(c, c, tlsconfig.AuthorizeID(c.serverID)))
		if err != nil {
			return nil, err
		}
		c.conn = conn
	}
	return cav1.NewCertificateAuthorityServiceClient(c.conn), nil
}

// batchSign asks the CA to sign reqs in one call; results are in request
// order.
func (c *Client) batchSign(ctx context.Context, reqs []*cav1.SignX509SVIDRequest) ([]*cav1.BatchResult, error) {
	ca, err := c.ca()
	if err != nil {
		return nil, err
	}
	resp, err := ca.BatchSignX509SVID(ctx, &cav1.BatchSignX509SVIDRequest{Requests: reqs})
	if err != nil {
		return nil, fmt.Errorf("client: batch sign: %w", err)
	}
	if len(resp.Results) != len(reqs) {
		return nil, fmt.Errorf("client: batch sign: CA answered %d results for %d requests", len(resp.Results), len(reqs))
	}
	return resp.Results, nil
}

// syncAgent opens the stream of the agent's state.
func (c *Client) syncAgent(ctx context.Context) (grpc.ServerStreamingClient[cav1.SyncAgentResponse], error) {
	ca, err := c.ca()
	if err != nil {
		return nil, err
	}
	s, err := ca.SyncAgent(ctx, &cav1.SyncAgentRequest{})
	if err != nil {
		return nil, fmt.Errorf("client: sync: %w", err)
	}
	return c.dialer.SyncStream(s), nil
}

// Run renews the agent SVID at the policy's renewal time until ctx is
// done, retrying with backoff while the CA fails. Once the SVID has
// expired it logs what the operator must do and stops renewing.
func (c *Client) Run(ctx context.Context) error {
	attempt := 0
	for {
		svid := c.AgentSVID()
		if svid == nil {
			return ErrNoAgentSVID
		}
		leaf := svid.Certificates[0]
		now := c.cfg.Clock.Now()
		if !now.Before(leaf.NotAfter) {
			err := fmt.Errorf("%w: agent SVID expired at %s; start the agent with a new join token (--join-token-file or CASTELLAN_AGENT_JOIN_TOKEN)",
				ErrNoAgentSVID, leaf.NotAfter.UTC().Format(time.RFC3339))
			c.log.Error(err.Error())
			return err
		}
		// The CA refuses an agent SVID renewal before half its lifetime
		// (counted from NotBefore): never ask earlier than that.
		renewAt := c.cfg.Policy.RenewAt(c.receivedAt(svid), leaf.NotBefore, leaf.NotAfter)
		renewAt = later(renewAt, leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore)/2+time.Second))
		if at, ok := c.taint.renewAt(leaf); ok && at.Before(renewAt) {
			renewAt = at // under a tainted authority: the CA accepts it early
		}
		wait := renewAt.Sub(now)
		if attempt > 0 {
			wait = c.cfg.Policy.Backoff(attempt, leaf.NotAfter.Sub(leaf.NotBefore))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-c.taint.wake:
			continue // a taint moved the renewal time
		case <-c.cfg.Clock.After(wait):
		}
		if err := c.renew(ctx); err != nil {
			attempt++
			c.log.Warn("agent SVID renewal failed; will retry", "attempt", attempt, "error", err.Error())
			continue
		}
		attempt = 0
	}
}

func (c *Client) renew(ctx context.Context) error {
	ca, err := c.ca()
	if err != nil {
		return err
	}
	key, csr, err := newCSR(spiffeid.ID{})
	if err != nil {
		return err
	}
	resp, err := ca.RenewAgent(ctx, &cav1.RenewAgentRequest{Csr: csr})
	if err != nil {
		return fmt.Errorf("client: renew agent SVID: %w", err)
	}
	svid, err := svidFromProto(resp.Svid, key)
	if err != nil {
		return err
	}
	if err := c.storeSVID(svid); err != nil {
		return err
	}
	c.log.Info("renewed agent SVID", "spiffe_id", svid.ID.String(), "not_after", svid.Certificates[0].NotAfter)
	return nil
}

// Close closes the connection.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		return nil
	}
	err := c.conn.Close()
	c.conn = nil
	return err
}

// later returns the later of a and b.
func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
