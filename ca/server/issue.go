package server

import (
	"cmp"
	"context"
	"encoding/hex"
	"errors"
	"time"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/ca/authority"
	"github.com/castellan-dev/castellan/ca/authz"
	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/reserve"
	"github.com/castellan-dev/castellan/ca/quota"
	"github.com/castellan-dev/castellan/internal/serial"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// issuance is one workload SVID request on its way through the pipeline.
type issuance struct {
	req *cav1.SignX509SVIDRequest
	// authorize replaces Config.Authorizer for front ends that authorize
	// callers themselves (Issue); nil for agents' requests.
	authorize func(context.Context, spiffeid.ID) (authz.Grant, error)
	// detail is the ledger entry's reason ("" for "entry <EntryID>").
	detail string
	// parent is the serial of the certificate this one renews ("" when
	// the request is not a renewal with a certificate; see Event.Parent).
	parent string
	grant  authz.Grant
	issued *authority.Issued
	err    error
	// logIndex is the issuance entry's position in the ledger (logproof.go).
	logIndex *uint64
}

// prepare validates the CSR and TTL of one request and authorizes it for
// node. On failure it sets it.err.
func (s *Server) prepare(ctx context.Context, node string, it *issuance) {
	a := s.cfg.Authority
	if n := len(it.req.GetCsr()); n > MaxCSRBytes {
		it.err = refuse(codes.InvalidArgument, reasonCSRTooLarge, "CSR is %d bytes; at most %d are accepted", n, MaxCSRBytes)
		return
	}
	csr, err := a.ParseWorkloadCSR(it.req.GetCsr())
	if err != nil {
		it.err = err
		return
	}
	ttl, err := requestTTL(it.req.GetTtlSeconds(), a.Lifetime())
	if err != nil {
		it.err = err
		return
	}
	var grant authz.Grant
	if it.authorize != nil {
		grant, err = it.authorize(ctx, csr.ID)
	} else {
		grant, err = s.cfg.Authorizer.Authorize(ctx, authz.Request{
			Node: node, ID: csr.ID, EntryID: it.req.GetEntryId(), PodUID: it.req.GetPodUid(),
		})
	}
	if err != nil {
		it.err = err
		return
	}
	if ttl, err = svidTTL(ttl, grant, a.Lifetime()); err != nil {
		it.err = err
		return
	}
	if q := s.cfg.Quota; q != nil {
		if it.err = q.Take(node, quota.Identity(csr.ID.String(), grant.EntryID), cmp.Or(ttl, a.DefaultTTL())); it.err != nil {
			return
		}
	}
	it.grant = grant
	start := time.Now()
	it.issued, it.err = a.Sign(ctx, csr, csr.ID, ttl)
	if it.err == nil {
		s.metrics.observeSigning(time.Since(start))
	}
}

// record appends the issued certificates of items to the ledger in one
// call. If the ledger fails, every issued item fails: a certificate not in
// the ledger is never handed out.
func (s *Server) record(ctx context.Context, node string, items []*issuance, extra ...entry.Event) error {
	events := extra
	for _, it := range items {
		if it.err == nil {
			detail := it.detail
			if detail == "" {
				detail = "entry " + it.grant.EntryID
			}
			ev := issuanceEvent(entry.KindIssuance, it.issued, node, detail)
			ev.Parent = it.parent
			events = append(events, ev)
		}
	}
	if len(events) == 0 {
		return nil
	}
	idx, err := s.cfg.Ledger.Append(ctx, events...)
	if err == nil {
		setLogIndexes(items, idx[len(extra):])
	}
	if err != nil {
		s.log.ErrorContext(ctx, "ledger append failed; withholding certificates", "node", node, "error", err.Error())
		err = appendStatus(err)
		for _, it := range items {
			if it.err == nil {
				it.issued, it.err = nil, err
			}
		}
		return err
	}
	if err := s.refuseIfBannedAfterRecord(ctx, node); err != nil {
		for _, it := range items {
			if it.err == nil {
				it.issued, it.err = nil, err
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

func issuanceEvent(kind entry.Kind, iss *authority.Issued, node, detail string) entry.Event {
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

func svidProto(iss *authority.Issued) *cav1.X509SVID {
	chain := make([][]byte, 0, len(iss.Chain))
	for _, c := range iss.Chain {
		chain = append(chain, c.Raw)
	}
	return &cav1.X509SVID{
		SpiffeId:  iss.ID.String(),
		CertChain: chain,
		Serial:    serial.FromBig(iss.Serial).String(),
		NotBefore: timestamppb.New(iss.NotBefore),
		NotAfter:  timestamppb.New(iss.NotAfter),
	}
}
