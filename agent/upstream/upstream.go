// Package upstream holds what a node agent learns from the sources of its
// identities, as plain Go values: the registration entries it must hold
// SVIDs for, the trust bundle, the revoked serials and the tainted
// authorities the CA pushes, and the SVIDs the CA signs. The agent's
// manager consumes them; the CA client (agent/client) and, on Kubernetes,
// the pods of the node (agent/podentries) produce them. No transport type
// crosses this seam: a reader of the manager needs to know nothing of
// gRPC.
package upstream

import (
	"crypto/x509"
	"errors"
	"time"

	"github.com/castellan-dev/castellan/agent/state"
	"github.com/castellan-dev/castellan/internal/serial"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// ErrUnavailable is wrapped by the errors of a source that could not be
// reached at all (as opposed to one that answered with a refusal): the
// manager reports the CA unreachable on it.
var ErrUnavailable = errors.New("CA unavailable")

// Entry is one identity the agent must hold an SVID for.
type Entry struct {
	// ID names the entry among all the agent's entries, whatever their
	// source: a registration entry's ID, or a pod's UID.
	ID string
	// SPIFFEID is the identity the SVID must carry.
	SPIFFEID spiffeid.ID
	// Selectors a caller must all present to receive the SVID, in any
	// order.
	Selectors []state.Selector
	// TTL is the lifetime the entry asks for; 0 means the CA's default.
	TTL time.Duration
	// AllowAnyUser: the operator let any local user obtain the identity
	// (an entry selecting an executable but no uid or gid).
	AllowAnyUser bool
	// PodUID, when set, makes the entry stand for that pod of the node
	// (spiffe://<td>/ns/<ns>/sa/<sa>): its SVID is asked for by pod UID,
	// which the CA checks against the API server, not by entry ID.
	PodUID string
}

// State is one complete view of the agent pushed by the CA.
type State struct {
	// Entries assigned to the agent's node.
	Entries []Entry
	// Bundle is the trust bundle; nil when the CA sent none it could use.
	Bundle *x509bundle.Bundle
	// Revoked are the serials of revoked, unexpired certificates.
	Revoked []serial.Number
	// Tainted are the signing certificates of tainted authorities: every
	// SVID under one of them must be replaced.
	Tainted []*x509.Certificate
}

// Signed is the CA's answer to one signing request: an SVID whose key
// matches its leaf, or the reason the CA refused that request.
type Signed struct {
	SVID *x509svid.SVID
	// LogIndex is the leaf's index in the CA's issuance log, if the CA
	// gave one.
	LogIndex *uint64
	// Err is the CA's refusal of this request alone (SVID is then nil).
	Err error
}
