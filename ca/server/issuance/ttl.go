package issuance

import (
	"time"

	"github.com/castellan-dev/castellan/ca/authority"
	"github.com/castellan-dev/castellan/ca/authz"
	"github.com/castellan-dev/castellan/ca/lifetime"
)

// requestTTL converts a requested TTL in seconds under the CA's maximum
// (lifetime.Policy.Request) before the request is authorized.
func requestTTL(secs int64, p lifetime.Policy) (time.Duration, error) {
	ttl, err := p.Request(secs)
	return ttl, authority.TTLError(err)
}

// svidTTL applies the lifetime rule (lifetime.Policy.For) to a request
// for requested under grant g: the entry's TTL is the ceiling, Kubernetes
// pod grants have none.
func svidTTL(requested time.Duration, g authz.Grant, p lifetime.Policy) (time.Duration, error) {
	ttl, err := p.For(requested, g.TTL, g.EntryID)
	return ttl, authority.TTLError(err)
}
