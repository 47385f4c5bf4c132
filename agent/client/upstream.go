package client

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/castellan-dev/castellan/agent/state"
	"github.com/castellan-dev/castellan/agent/upstream"
	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/internal/serial"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Sync follows the CA's SyncAgent stream, calling update with every state
// it pushes, converted to Go values, until ctx ends or the stream fails;
// it returns why it ended. It waits until the agent holds its SVID
// (Bootstrap or BootstrapK8s succeeded), so that the first sync after a
// bootstrap is not delayed by its caller's retry backoff. It implements
// the agent manager's CA.
func (c *Client) Sync(ctx context.Context, update func(upstream.State)) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-c.bootstrapped:
	}
	s, err := c.syncAgent(ctx)
	if err != nil {
		return unavailable(err)
	}
	for {
		resp, err := s.Recv()
		if err != nil {
			return unavailable(fmt.Errorf("client: sync: %w", err))
		}
		update(c.stateFromProto(resp.GetState()))
	}
}

// Sign asks the CA for one SVID per entry in one BatchSignX509SVID call,
// each over a fresh P-256 key made here: an entry with a pod UID by pod
// UID, any other by entry ID. Results are in the order of entries; a
// refusal of one request is its result's error, with the CA's status
// code. It implements the agent manager's CA.
func (c *Client) Sign(ctx context.Context, entries []upstream.Entry) ([]upstream.Signed, error) {
	out := make([]upstream.Signed, len(entries))
	var reqs []*cav1.SignX509SVIDRequest
	var sent []int // index in entries of each request
	keys := make([]crypto.Signer, len(entries))
	for i, e := range entries {
		key, csr, err := newCSR(e.SPIFFEID)
		if err != nil {
			out[i].Err = err
			continue
		}
		keys[i] = key
		reqs = append(reqs, signRequest(e, csr))
		sent = append(sent, i)
	}
	if len(reqs) == 0 {
		return out, nil
	}
	results, err := c.batchSign(ctx, reqs)
	if err != nil {
		return nil, unavailable(err)
	}
	for j, res := range results {
		i := sent[j]
		out[i] = signedFromProto(res, keys[i])
	}
	return out, nil
}

// signRequest is the request for e's SVID over csr.
func signRequest(e upstream.Entry, csr []byte) *cav1.SignX509SVIDRequest {
	r := &cav1.SignX509SVIDRequest{Csr: csr, TtlSeconds: int64(e.TTL / time.Second)}
	if e.PodUID != "" {
		r.PodUid = e.PodUID
	} else {
		r.EntryId = e.ID
	}
	return r
}

// signedFromProto converts one batch result for a CSR made with key.
func signedFromProto(res *cav1.BatchResult, key crypto.Signer) upstream.Signed {
	if e := res.GetError(); e != nil {
		return upstream.Signed{Err: status.Error(codes.Code(e.GetCode()), e.GetMessage())}
	}
	svid, err := svidFromProto(res.GetSvid(), key)
	if err != nil {
		return upstream.Signed{Err: err}
	}
	return upstream.Signed{SVID: svid, LogIndex: res.GetSvid().LogIndex}
}

// unavailable marks err as the CA being unreachable when its gRPC code
// says so (upstream.ErrUnavailable).
func unavailable(err error) error {
	if status.Code(err) == codes.Unavailable {
		return fmt.Errorf("%w: %w", upstream.ErrUnavailable, err)
	}
	return err
}

// stateFromProto converts the CA's state, logging and leaving out what
// cannot be used: an unusable bundle, an entry with an invalid SPIFFE ID,
// a revoked serial that is not a serial number, a tainted authority that
// is not a certificate (a CA bug, or a hostile CA, must not stop the agent
// from honouring the rest).
func (c *Client) stateFromProto(st *cav1.AgentState) upstream.State {
	var out upstream.State
	if b := st.GetBundle(); b != nil {
		bundle, err := bundleFromProto(b)
		if err != nil {
			c.log.Error("ignoring unusable trust bundle from the CA", "error", err.Error())
		} else {
			out.Bundle = bundle
		}
	}
	for _, e := range st.GetEntries() {
		entry, err := entryFromProto(e)
		if err != nil {
			c.log.Warn("CA pushed an unusable entry; ignoring it", "entry_id", e.GetId(), "error", err.Error())
			continue
		}
		out.Entries = append(out.Entries, entry)
	}
	for _, s := range st.GetRevokedSerials() {
		n, err := serial.Parse(s)
		if err != nil {
			c.log.Warn("CA pushed a revoked serial that is not a serial number; ignoring it", "serial", s, "error", err)
			continue
		}
		out.Revoked = append(out.Revoked, n)
	}
	for _, der := range st.GetTaintedAuthorities() {
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			c.log.Warn("CA pushed a tainted authority that is not a certificate; ignoring it", "error", err.Error())
			continue
		}
		out.Tainted = append(out.Tainted, cert)
	}
	return out
}

// entryFromProto converts a registration entry of the CA.
func entryFromProto(e *cav1.Entry) (upstream.Entry, error) {
	id, err := spiffeid.FromString(e.GetSpiffeId())
	if err != nil {
		return upstream.Entry{}, fmt.Errorf("client: entry %q has an invalid SPIFFE ID: %w", e.GetId(), err)
	}
	if e.GetId() == "" {
		return upstream.Entry{}, errors.New("client: entry has no ID")
	}
	sels := make([]state.Selector, 0, len(e.GetSelectors()))
	for _, s := range e.GetSelectors() {
		sels = append(sels, state.Selector{Type: s.GetType(), Value: s.GetValue()})
	}
	return upstream.Entry{
		ID: e.GetId(), SPIFFEID: id, Selectors: sels,
		TTL: time.Duration(e.GetTtlSeconds()) * time.Second, AllowAnyUser: e.GetAllowAnyUser(),
	}, nil
}

// bundleFromProto converts the CA's bundle message.
func bundleFromProto(b *cav1.Bundle) (*x509bundle.Bundle, error) {
	if b == nil || len(b.X509Authorities) == 0 {
		return nil, errors.New("client: CA sent an empty trust bundle")
	}
	td, err := spiffeid.TrustDomainFromString(b.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("client: bundle trust domain: %w", err)
	}
	certs := make([]*x509.Certificate, 0, len(b.X509Authorities))
	for _, der := range b.X509Authorities {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("client: bundle certificate: %w", err)
		}
		certs = append(certs, c)
	}
	return x509bundle.FromX509Authorities(td, certs), nil
}
