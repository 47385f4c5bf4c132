package server

import (
	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/ca/authority"
	"github.com/castellan-dev/castellan/internal/serial"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// svidProto is iss in its API form.
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

// withLogIndex sets the log index of an issuance response.
func withLogIndex(pb *cav1.X509SVID, idx *uint64) *cav1.X509SVID {
	pb.LogIndex = idx
	return pb
}
