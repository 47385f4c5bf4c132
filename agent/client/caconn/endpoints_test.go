package caconn

import (
	"strings"
	"testing"
)

func TestParseTarget(t *testing.T) {
	for _, tc := range []struct {
		addrs   []string
		uri     string // "" when an error is expected
		wantErr string
	}{
		{addrs: []string{"ca.example:8443"}, uri: "dns:///ca.example:8443"},
		{addrs: []string{"127.0.0.1:8443"}, uri: "dns:///127.0.0.1:8443"},
		{addrs: []string{"[::1]:8443"}, uri: "dns:///[::1]:8443"},
		{addrs: []string{"dns:///ca-headless.ns.svc:8443"}, uri: "dns:///ca-headless.ns.svc:8443"},
		{addrs: []string{"dns://10.0.0.10:53/ca-headless.ns.svc:8443"}, uri: "dns://10.0.0.10:53/ca-headless.ns.svc:8443"},
		{addrs: []string{"10.0.0.1:8443", "ca-b.example:8443"}, uri: staticScheme + ":///10.0.0.1:8443,ca-b.example:8443"},
		{addrs: nil, wantErr: "no CA address"},
		{addrs: []string{"ca.example"}, wantErr: "want host:port"},
		{addrs: []string{":8443"}, wantErr: "the host is empty"},
		{addrs: []string{"ca.example:0"}, wantErr: "not a number in 1-65535"},
		{addrs: []string{"ca.example:70000"}, wantErr: "not a number in 1-65535"},
		{addrs: []string{"ca.example:https"}, wantErr: "not a number in 1-65535"},
		{addrs: []string{"dns:ca.example:8443"}, wantErr: "want dns:///host:port"},
		{addrs: []string{"dns:///ca.example"}, wantErr: "want host:port"},
		{addrs: []string{"dns:///a:1", "b:2"}, wantErr: "must be the only CA address"},
		{addrs: []string{"a:1", "unix:///run/ca.sock"}, wantErr: "must be the only CA address"},
		{addrs: []string{"a:1", "a:1"}, wantErr: "listed twice"},
	} {
		got, err := parseTarget(tc.addrs)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("parseTarget(%q) = %q, %v; want an error containing %q", tc.addrs, got.uri, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got.uri != tc.uri {
			t.Errorf("parseTarget(%q) = %q, %v; want %q", tc.addrs, got.uri, err, tc.uri)
		}
		if (len(tc.addrs) > 1) != (got.resolver != nil) {
			t.Errorf("parseTarget(%q): static resolver %v, want one exactly for several addresses", tc.addrs, got.resolver)
		}
	}
}
