package version

import (
	"bytes"
	"strings"
	"testing"
)

func TestPrintOnlyForTheVersionFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want bool
	}{
		{[]string{"--version"}, true},
		{[]string{"-version"}, true},
		{nil, false},
		{[]string{"--version", "x"}, false},
		{[]string{"--versions"}, false},
		{[]string{"--help"}, false},
	} {
		var out bytes.Buffer
		got := Print("castellan-agent", tc.args, &out)
		if got != tc.want || (out.Len() > 0) != tc.want {
			t.Errorf("Print(%q) = %v, printed %q; want %v", tc.args, got, out.String(), tc.want)
		}
		if tc.want && !strings.HasPrefix(out.String(), "castellan-agent devel (commit unknown, go") {
			t.Errorf("Print(%q) printed %q", tc.args, out.String())
		}
	}
}
