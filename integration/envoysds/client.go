// Package envoysds is an SDS client that behaves as Envoy does, for tests and
// for the Bookinfo services that take their TLS material over SDS.
//
// A Client opens an envoy.service.secret.v3.SecretDiscoveryService
// StreamSecrets stream, sends the initial DiscoveryRequest with its Node and
// resource names, and for every response runs the caller's validator: an
// accepted response is ACKed (version_info and response_nonce of the
// response), a rejected one is NACKed (error_detail, the nonce, and the last
// accepted version_info), exactly as the xDS protocol asks. When the stream
// fails the client resubscribes with exponential backoff, sending the last
// accepted version. Accepted updates are delivered on Updates.
package envoysds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
)

// SecretTypeURL is the xDS type URL of an SDS secret.
const SecretTypeURL = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

// Update is one accepted SDS response merged into what the client already
// held: Secrets maps every secret name received so far to its latest value.
type Update struct {
	// Version is the version_info of the accepted response.
	Version string
	// Secrets holds the latest accepted value of each secret by name. The
	// map is the receiver's to keep.
	Secrets map[string]*tlsv3.Secret
}

// Validator decides whether a response's secrets are acceptable; a non-nil
// error makes the client NACK the response with the error's text.
type Validator func(secrets map[string]*tlsv3.Secret) error

// Stats counts what a client has seen and sent, for tests and diagnostics.
type Stats struct {
	Streams   int // streams opened (1 + resubscriptions)
	Responses int // responses received
	ACKs      int
	NACKs     int
	// LastNonce and LastVersion are those of the last response received.
	LastNonce, LastVersion string
}

// Config configures a Client. Node and ResourceNames are required.
type Config struct {
	// Node identifies the client as Envoy's node does (id, cluster, metadata).
	Node *corev3.Node
	// ResourceNames to subscribe to, for example "default" and "ROOTCA".
	ResourceNames []string
	// Validate, if set, may reject a response; nil accepts every response.
	Validate Validator
	// MinBackoff and MaxBackoff bound the resubscription delay; defaults
	// 50ms and 5s.
	MinBackoff, MaxBackoff time.Duration
	// Logger, if set, receives one record per ACK, NACK and stream error.
	Logger *slog.Logger
}

// Client is an Envoy-like SDS subscriber. Create it with New and run it with
// Run; read accepted updates from Updates.
type Client struct {
	cfg     Config
	sds     secretv3.SecretDiscoveryServiceClient
	updates chan Update

	mu       sync.Mutex
	stats    Stats
	version  string // last accepted version_info
	accepted map[string]*tlsv3.Secret
}

// Dial connects to an SDS server listening on the Unix socket at path. The
// caller closes the returned connection.
func Dial(path string) (*grpc.ClientConn, error) {
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("envoysds: dial %s: %w", path, err)
	}
	return conn, nil
}

// New returns a client that subscribes over conn.
func New(conn grpc.ClientConnInterface, cfg Config) (*Client, error) {
	if cfg.Node == nil || cfg.Node.GetId() == "" {
		return nil, errors.New("envoysds: Config.Node with an id is required")
	}
	if len(cfg.ResourceNames) == 0 {
		return nil, errors.New("envoysds: Config.ResourceNames must name at least one secret")
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 50 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(5*time.Second, cfg.MinBackoff)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Client{
		cfg:      cfg,
		sds:      secretv3.NewSecretDiscoveryServiceClient(conn),
		updates:  make(chan Update, 16),
		accepted: map[string]*tlsv3.Secret{},
	}, nil
}

// Updates delivers every accepted response, merged with earlier ones. If the
// reader falls behind, Run blocks rather than dropping an update.
func (c *Client) Updates() <-chan Update { return c.updates }

// Stats returns a copy of the client's counters.
func (c *Client) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

// Run subscribes and keeps subscribing until ctx is done; it returns
// ctx.Err(). A stream that ends with an error is reopened after a backoff
// that doubles (with jitter) up to MaxBackoff and resets once a response has
// been accepted.
func (c *Client) Run(ctx context.Context) error {
	backoff := c.cfg.MinBackoff
	for {
		accepted, err := c.stream(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if accepted {
			backoff = c.cfg.MinBackoff
		}
		c.cfg.Logger.Warn("sds stream ended, resubscribing", "error", err, "backoff", backoff)
		delay := backoff/2 + rand.N(backoff/2+1)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		backoff = min(2*backoff, c.cfg.MaxBackoff)
	}
}

// stream runs one StreamSecrets stream until it fails; it reports whether
// any response was accepted on it.
func (c *Client) stream(ctx context.Context) (accepted bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := c.sds.StreamSecrets(ctx)
	if err != nil {
		return false, fmt.Errorf("envoysds: open stream: %w", err)
	}
	c.mu.Lock()
	c.stats.Streams++
	version := c.version
	c.mu.Unlock()
	// Like Envoy, a resubscription carries the last accepted version.
	if err := s.Send(c.request(version, "", nil)); err != nil {
		return false, fmt.Errorf("envoysds: send initial request: %w", err)
	}
	for {
		resp, err := s.Recv()
		if err != nil {
			return accepted, fmt.Errorf("envoysds: receive: %w", err)
		}
		ok, err := c.handle(ctx, s, resp)
		if err != nil {
			return accepted, err
		}
		accepted = accepted || ok
	}
}

// handle validates one response, ACKs or NACKs it, and delivers it if
// accepted.
func (c *Client) handle(ctx context.Context, s grpc.BidiStreamingClient[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse], resp *discoveryv3.DiscoveryResponse) (bool, error) {
	secrets, err := decode(resp)
	if err == nil && c.cfg.Validate != nil {
		err = c.cfg.Validate(secrets)
	}
	c.mu.Lock()
	c.stats.Responses++
	c.stats.LastNonce, c.stats.LastVersion = resp.GetNonce(), resp.GetVersionInfo()
	if err != nil {
		c.stats.NACKs++
		last := c.version
		c.mu.Unlock()
		c.cfg.Logger.Warn("sds NACK", "version", resp.GetVersionInfo(), "nonce", resp.GetNonce(), "error", err)
		nack := &status.Status{Code: int32(codes.InvalidArgument), Message: err.Error()}
		if err := s.Send(c.request(last, resp.GetNonce(), nack)); err != nil {
			return false, fmt.Errorf("envoysds: send NACK: %w", err)
		}
		return false, nil
	}
	c.stats.ACKs++
	c.version = resp.GetVersionInfo()
	maps.Copy(c.accepted, secrets)
	update := Update{Version: c.version, Secrets: maps.Clone(c.accepted)}
	c.mu.Unlock()
	c.cfg.Logger.Debug("sds ACK", "version", resp.GetVersionInfo(), "nonce", resp.GetNonce())
	if err := s.Send(c.request(update.Version, resp.GetNonce(), nil)); err != nil {
		return true, fmt.Errorf("envoysds: send ACK: %w", err)
	}
	select {
	case c.updates <- update:
	case <-ctx.Done():
		return true, ctx.Err()
	}
	return true, nil
}

func (c *Client) request(version, nonce string, nack *status.Status) *discoveryv3.DiscoveryRequest {
	return &discoveryv3.DiscoveryRequest{
		VersionInfo:   version,
		Node:          c.cfg.Node,
		ResourceNames: c.cfg.ResourceNames,
		TypeUrl:       SecretTypeURL,
		ResponseNonce: nonce,
		ErrorDetail:   nack,
	}
}

// decode unpacks a response's resources into secrets by name.
func decode(resp *discoveryv3.DiscoveryResponse) (map[string]*tlsv3.Secret, error) {
	if resp.GetTypeUrl() != SecretTypeURL {
		return nil, fmt.Errorf("envoysds: response type_url %q, want %q", resp.GetTypeUrl(), SecretTypeURL)
	}
	out := make(map[string]*tlsv3.Secret, len(resp.GetResources()))
	for _, r := range resp.GetResources() {
		var s tlsv3.Secret
		if err := r.UnmarshalTo(&s); err != nil {
			return nil, fmt.Errorf("envoysds: resource %s: %w", r.GetTypeUrl(), err)
		}
		if s.GetName() == "" {
			return nil, errors.New("envoysds: secret without a name")
		}
		out[s.GetName()] = &s
	}
	return out, nil
}
