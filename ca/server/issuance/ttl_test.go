package issuance

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/authority"
	"github.com/castellan-dev/castellan/ca/authz"
	"github.com/castellan-dev/castellan/ca/lifetime"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestSVIDTTLEntryIsTheCeiling(t *testing.T) {
	const def, maxTTL = time.Hour, 24 * time.Hour
	policy, err := lifetime.New(def, maxTTL)
	if err != nil {
		t.Fatal(err)
	}
	entry := func(ttl time.Duration) authz.Grant { return authz.Grant{EntryID: "e1", TTL: ttl} }
	pod := authz.Grant{EntryID: "pod-uid"}
	for _, tc := range []struct {
		name      string
		requested time.Duration
		grant     authz.Grant
		want      time.Duration
		refused   string // substring of the refusal; "" for a grant
	}{
		{"none asked, entry TTL", 0, entry(10 * time.Minute), 10 * time.Minute, ""},
		{"none asked, no entry TTL: CA default", 0, entry(0), def, ""},
		{"none asked, pod: CA default", 0, pod, def, ""},
		{"below the entry TTL", 5 * time.Minute, entry(10 * time.Minute), 5 * time.Minute, ""},
		{"exactly the entry TTL", 10 * time.Minute, entry(10 * time.Minute), 10 * time.Minute, ""},
		{"one second above the entry TTL", 10*time.Minute + time.Second, entry(10 * time.Minute), 0, "10m0s, the TTL of registration entry e1"},
		{"the CA max above the entry TTL", maxTTL, entry(10 * time.Minute), 0, "request at most 10m0s"},
		{"no entry TTL: up to the CA max", maxTTL, entry(0), maxTTL, ""},
		{"pod: up to the CA max", 2 * time.Hour, pod, 2 * time.Hour, ""},
		{"pod above the CA max", maxTTL + time.Second, pod, 0, "exceeds the maximum 24h0m0s"},
		{"entry TTL above a lowered CA max: the max is the ceiling", 0, entry(48 * time.Hour), maxTTL, ""},
		{"entry TTL above a lowered CA max, asked above the max", maxTTL + time.Second, entry(48 * time.Hour), 0, "exceeds the maximum"},
		{"negative", -time.Second, entry(0), 0, "negative"},
	} {
		got, err := svidTTL(tc.requested, tc.grant, policy)
		if tc.refused == "" {
			if err != nil || got != tc.want {
				t.Errorf("%s: %v, %v; want %v", tc.name, got, err, tc.want)
			}
			continue
		}
		var ae *authority.Error
		if !errors.As(err, &ae) || status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.refused) {
			t.Errorf("%s: %v, %v; want InvalidArgument containing %q", tc.name, got, err, tc.refused)
		}
	}
}
