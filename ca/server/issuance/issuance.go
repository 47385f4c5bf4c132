// Package issuance is the CA's workload SVID pipeline: a call's requests
// are admitted (package admission), then each is prepared (CSR size and
// validation, TTL, authorization, quota, signing; spread over the CPUs
// for large batches), and the certificates signed are recorded in the
// ledger in one append before any is handed out. A certificate not in
// the ledger is never returned; one recorded for a node banned meanwhile
// is revoked and withheld (package cutoff).
package issuance

import (
	"cmp"
	"context"
	"encoding/hex"
	"errors"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"time"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/ca/authority"
	"github.com/castellan-dev/castellan/ca/authz"
	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/reserve"
	"github.com/castellan-dev/castellan/ca/quota"
	"github.com/castellan-dev/castellan/ca/refusal"
	"github.com/castellan-dev/castellan/ca/server/admission"
	"github.com/castellan-dev/castellan/ca/server/cutoff"
	"github.com/castellan-dev/castellan/internal/serial"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// MaxCSRBytes bounds one CSR; real ones are well under 4 KiB.
const MaxCSRBytes = 64 << 10

// ReasonCSRTooLarge counts CSRs over MaxCSRBytes in castellan_csr_total.
const ReasonCSRTooLarge = "csr_too_large"

// minParallelBatch is the batch size from which signing is spread over
// the CPUs.
const minParallelBatch = 8

// Item is one workload SVID request on its way through the pipeline: the
// request, then its outcome.
type Item struct {
	Req *cav1.SignX509SVIDRequest
	// Authorize replaces Config.Authorizer for front ends that authorize
	// callers themselves (server.Server.Issue); nil for agents' requests.
	Authorize func(context.Context, spiffeid.ID) (authz.Grant, error)
	// Detail is the ledger entry's reason ("" for "entry <EntryID>").
	Detail string
	// Parent is the serial of the certificate this one renews ("" when
	// the request is not a renewal with a certificate; see Event.Parent).
	Parent string
	grant  authz.Grant
	// Issued is the certificate, recorded in the ledger; nil if Err.
	Issued *authority.Issued
	// Err is the item's refusal or failure.
	Err error
	// LogIndex is the issuance entry's position in the ledger (GetLogProof).
	LogIndex *uint64
}

// Ledger is what the pipeline needs of the issuance ledger (*ledger.Ledger).
type Ledger interface {
	// Append records events durably before returning, in order, and
	// returns their indexes.
	Append(ctx context.Context, events ...entry.Event) ([]uint64, error)
}

// Quota limits issuance per node and per identity (*quota.Limiter).
type Quota interface {
	// Take takes one certificate of lifetime ttl for identity on node, or
	// returns the refusal (ResourceExhausted).
	Take(node, identity string, ttl time.Duration) error
}

// Config configures a Pipeline; every field but Quota and Logger is
// required.
type Config struct {
	Authority *authority.Authority
	// Authorizer decides which SVIDs a node may obtain.
	Authorizer authz.Authorizer
	// Quota, when set, limits issuance per node and per identity.
	Quota  Quota
	Ledger Ledger
	// Admission bounds the CSRs worked on at once.
	Admission *admission.Control
	// Cutoff withholds certificates recorded for a node banned meanwhile.
	Cutoff *cutoff.Guard
	// Signing observes the seconds each signing took
	// (castellan_signing_duration_seconds).
	Signing prometheus.Observer
	// Logger receives ledger failures (nil: discard).
	Logger *slog.Logger
}

// Pipeline issues workload SVIDs.
type Pipeline struct {
	cfg Config
	log *slog.Logger
}

// New returns the pipeline of cfg.
func New(cfg Config) *Pipeline {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Pipeline{cfg: cfg, log: log}
}

// Issue admits items (package admission), prepares and records them, and
// gives their room back. The error is the refusal of the whole call when
// the CA has no room for it (nothing was signed); the items' own outcomes
// are in their Err.
func (p *Pipeline) Issue(ctx context.Context, node string, items []*Item) error {
	w, err := p.cfg.Admission.Acquire(ctx, len(items))
	if err != nil {
		return err
	}
	defer p.cfg.Admission.Release(w)
	p.prepareAll(ctx, node, items)
	_ = p.record(ctx, node, items)
	return nil
}

// prepareAll prepares items, spread over the CPUs for large batches.
func (p *Pipeline) prepareAll(ctx context.Context, node string, items []*Item) {
	workers := runtime.GOMAXPROCS(0)
	if len(items) < minParallelBatch || workers == 1 {
		for _, it := range items {
			p.prepare(ctx, node, it)
		}
		return
	}
	var wg sync.WaitGroup
	chunk := (len(items) + workers - 1) / workers
	for lo := 0; lo < len(items); lo += chunk {
		part := items[lo:min(lo+chunk, len(items))]
		wg.Go(func() {
			for _, it := range part {
				p.prepare(ctx, node, it)
			}
		})
	}
	wg.Wait()
}

// CheckCSRSize refuses a CSR over MaxCSRBytes (InvalidArgument).
func CheckCSRSize(csr []byte) error {
	if n := len(csr); n > MaxCSRBytes {
		return refusal.Errorf(codes.InvalidArgument, ReasonCSRTooLarge, "server: CSR is %d bytes; at most %d are accepted", n, MaxCSRBytes)
	}
	return nil
}

// prepare validates the CSR and TTL of one request and authorizes it for
// node. On failure it sets it.Err.
func (p *Pipeline) prepare(ctx context.Context, node string, it *Item) {
	a := p.cfg.Authority
	if it.Err = CheckCSRSize(it.Req.GetCsr()); it.Err != nil {
		return
	}
	csr, err := a.ParseWorkloadCSR(it.Req.GetCsr())
	if err != nil {
		it.Err = err
		return
	}
	ttl, err := requestTTL(it.Req.GetTtlSeconds(), a.Lifetime())
	if err != nil {
		it.Err = err
		return
	}
	var grant authz.Grant
	if it.Authorize != nil {
		grant, err = it.Authorize(ctx, csr.ID)
	} else {
		grant, err = p.cfg.Authorizer.Authorize(ctx, authz.Request{
			Node: node, ID: csr.ID, EntryID: it.Req.GetEntryId(), PodUID: it.Req.GetPodUid(),
		})
	}
	if err != nil {
		it.Err = err
		return
	}
	if ttl, err = svidTTL(ttl, grant, a.Lifetime()); err != nil {
		it.Err = err
		return
	}
	if q := p.cfg.Quota; q != nil {
		if it.Err = q.Take(node, quota.Identity(csr.ID.String(), grant.EntryID), cmp.Or(ttl, a.DefaultTTL())); it.Err != nil {
			return
		}
	}
	it.grant = grant
	start := time.Now()
	it.Issued, it.Err = a.Sign(ctx, csr, csr.ID, ttl)
	if it.Err == nil {
		p.cfg.Signing.Observe(time.Since(start).Seconds())
	}
}

// record appends the issued certificates of items to the ledger in one
// call. If the ledger fails, every issued item fails: a certificate not in
// the ledger is never handed out.
func (p *Pipeline) record(ctx context.Context, node string, items []*Item, extra ...entry.Event) error {
	events := append(make([]entry.Event, 0, len(extra)+len(items)), extra...)
	for _, it := range items {
		if it.Err == nil {
			detail := it.Detail
			if detail == "" {
				detail = "entry " + it.grant.EntryID
			}
			ev := Event(entry.KindIssuance, it.Issued, node, detail)
			ev.Parent = it.Parent
			events = append(events, ev)
		}
	}
	if len(events) == 0 {
		return nil
	}
	idx, err := p.cfg.Ledger.Append(ctx, events...)
	if err == nil {
		setLogIndexes(items, idx[len(extra):])
	}
	if err != nil {
		p.log.ErrorContext(ctx, "ledger append failed; withholding certificates", "node", node, "error", err.Error())
		err = appendStatus(err)
		for _, it := range items {
			if it.Err == nil {
				it.Issued, it.Err = nil, err
			}
		}
		return err
	}
	if err := p.cfg.Cutoff.RefuseIfBannedAfterRecord(ctx, node); err != nil {
		for _, it := range items {
			if it.Err == nil {
				it.Issued, it.Err = nil, err
			}
		}
		return err
	}
	return nil
}

// appendStatus is what a caller is told when the ledger refused the append
// recording its certificates (ledgerStatus maps the admin calls' errors).
func appendStatus(err error) error {
	if errors.Is(err, reserve.ErrDiskReserve) || errors.Is(err, entry.ErrReadOnly) {
		return status.Error(codes.Unavailable, "server: no certificate was issued: "+err.Error())
	}
	return status.Error(codes.Unavailable, "server: the issuance ledger is unavailable, no certificate was issued; retry later")
}

// Event is the ledger event of the issuance of iss to node (kind
// entry.KindIssuance or KindRenewal), with detail as its reason.
func Event(kind entry.Kind, iss *authority.Issued, node, detail string) entry.Event {
	return entry.Event{
		Kind:            kind,
		Serial:          serial.FromBig(iss.Serial).String(),
		SPIFFEID:        iss.ID.String(),
		Node:            node,
		NotBefore:       iss.NotBefore,
		NotAfter:        iss.NotAfter,
		PublicKeySHA256: hex.EncodeToString(iss.PublicKeySHA256[:]),
		CertDER:         iss.Chain[0].Raw,
		Reason:          detail,
	}
}

// setLogIndexes gives each issued item the log index of its issuance
// entry; idx holds the indexes of the items' events, in item order (record
// appends one event per item without an error). The items point into one
// copy of idx, made here, rather than each into its own allocation.
func setLogIndexes(items []*Item, idx []uint64) {
	own := slices.Clone(idx)
	k := 0
	for _, it := range items {
		if it.Err != nil || k >= len(own) {
			continue
		}
		it.LogIndex = &own[k]
		k++
	}
}
