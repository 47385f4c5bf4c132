package audit

import (
	"time"

	auditv1 "github.com/castellan-dev/castellan/api/castellan/audit/v1"
	"github.com/castellan-dev/castellan/ca/ledger"
	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/index"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func tm(t *timestamppb.Timestamp) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.AsTime()
}

// EventProto converts a ledger entry to its wire form.
func EventProto(e *entry.Entry) *auditv1.Event {
	pb := &auditv1.Event{
		Index: e.Index, Kind: string(e.Kind), Time: ts(e.Time), Serial: e.Serial,
		SpiffeId: e.SPIFFEID, Node: e.Node, NotBefore: ts(e.NotBefore), NotAfter: ts(e.NotAfter),
		PublicKeySha256: e.PublicKeySHA256, CertDer: e.CertDER, Reason: e.Reason,
		LeafHash: e.LeafHash, Data: e.Data, Pruned: e.Pruned, ParentSerial: e.Parent,
	}
	if r := e.Revoked; r != nil {
		pb.Revocation = &auditv1.Revocation{Index: r.Index, Time: ts(r.Time), Reason: r.Reason}
	}
	return pb
}

// filterOf converts a ListRequest to a ledger filter.
func filterOf(req *auditv1.ListRequest) index.Filter {
	f := index.Filter{
		Serial: req.GetSerial(), SPIFFEID: req.GetSpiffeId(), SPIFFEIDPrefix: req.GetSpiffeIdPrefix(),
		Namespace: req.GetNamespace(), Node: req.GetNode(),
		Since: tm(req.GetSince()), Until: tm(req.GetUntil()),
	}
	switch req.GetState() {
	case auditv1.State_STATE_ACTIVE:
		f.State = index.StateActive
	case auditv1.State_STATE_EXPIRED:
		f.State = index.StateExpired
	case auditv1.State_STATE_REVOKED:
		f.State = index.StateRevoked
	}
	for _, k := range req.GetKinds() {
		f.Kinds = append(f.Kinds, entry.Kind(k))
	}
	return f
}

// toStatus maps ledger errors to gRPC status errors (ledger.Status).
func toStatus(err error) error { return ledger.Status("audit", err) }
