package cli

import (
	"encoding/json"
	"io"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
)

// WriteJSON writes v as indented JSON (the -o json form).
func WriteJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// OrDash is s, or "-" in a table cell when s is empty.
func OrDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// OptTime is ts as a time, or nil (omitted from JSON) when absent.
func OptTime(ts *timestamppb.Timestamp) *time.Time {
	if ts == nil {
		return nil
	}
	t := ts.AsTime()
	return &t
}

// FmtTime is ts in RFC 3339 (UTC) for a table cell, or "-" when absent.
func FmtTime(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "-"
	}
	return ts.AsTime().UTC().Format(time.RFC3339)
}
