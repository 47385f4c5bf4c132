package monitor

import (
	"strings"

	"github.com/castellan-dev/castellan/ca/tlog/logentry"
)

// Filter selects entries. An entry matches when its SPIFFE ID starts with
// one of SPIFFEIDPrefixes (any, if none is given) and its node is one of
// Nodes (any, if none is given). A prefix is a plain string prefix: end
// it with "/" to match whole path segments.
type Filter struct {
	SPIFFEIDPrefixes []string
	Nodes            []string
}

// Match reports whether e matches f.
func (f Filter) Match(e *logentry.Entry) bool {
	return matchAny(f.SPIFFEIDPrefixes, func(p string) bool { return strings.HasPrefix(e.SPIFFEID, p) }) &&
		matchAny(f.Nodes, func(n string) bool { return e.Node == n })
}

func matchAny(list []string, fn func(string) bool) bool {
	if len(list) == 0 {
		return true
	}
	for _, s := range list {
		if fn(s) {
			return true
		}
	}
	return false
}
