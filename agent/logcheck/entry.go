package logcheck

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
)

// entry is the part of a tlog entry (format version 1, ca/tlog's package
// documentation) that ties it to a certificate.
type entry struct {
	V     *int    `json:"v"`
	Index *uint64 `json:"index"`
	Kind  string  `json:"kind"`
	Cert  string  `json:"cert"`
}

// checkEntry checks that data is a version 1 issuance or renewal entry at
// index whose certificate is der.
func checkEntry(data []byte, index uint64, der []byte) error {
	var e entry
	if err := json.Unmarshal(data, &e); err != nil {
		return fmt.Errorf("log entry %d is not a JSON object: %w", index, err)
	}
	switch {
	case e.V == nil || *e.V != 1:
		return fmt.Errorf("log entry %d has format version %s; this agent reads version 1", index, version(e.V))
	case e.Index == nil || *e.Index != index:
		return fmt.Errorf("log entry at %d says it is at index %s", index, position(e.Index))
	case e.Kind != "issuance" && e.Kind != "renewal":
		return fmt.Errorf("log entry %d is a %q, not an issuance", index, e.Kind)
	}
	cert, err := base64.StdEncoding.DecodeString(e.Cert)
	if err != nil {
		return fmt.Errorf("log entry %d: its certificate is not base64: %w", index, err)
	}
	if !bytes.Equal(cert, der) {
		return fmt.Errorf("log entry %d holds another certificate than the one the CA issued", index)
	}
	return nil
}

func version(v *int) string {
	if v == nil {
		return "none"
	}
	return fmt.Sprint(*v)
}

func position(i *uint64) string {
	if i == nil {
		return "none"
	}
	return fmt.Sprint(*i)
}
