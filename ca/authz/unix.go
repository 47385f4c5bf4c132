package authz

import (
	"errors"
	"strings"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
)

// The unix selector rule.
//
// The agent's unix attestor reports four facts about a caller: unix:uid and
// unix:gid come from the kernel's credentials of the connection
// (SO_PEERCRED); unix:path and unix:sha256 describe the executable the
// calling process runs. Any local user can run a world-executable binary,
// and can have it attested on their behalf (connect, hand the socket to a
// child, exec the trusted binary), so the executable alone says nothing
// about who asks. Hence:
//
//   - an entry with any unix selector must also carry unix:uid:N or
//     unix:gid:N, which a user cannot forge;
//   - an operator who really means "any user running this binary" sets
//     AllowAnyUser (castellanctl entry create --allow-any-user); the entry
//     is stored with it, so listings show it and agents warn about it;
//   - AllowAnyUser on an entry that needs no consent (it has a uid or gid
//     selector, or no unix selector at all) is refused as contradictory;
//   - entries without unix selectors (e.g. k8s:...) are not concerned, and
//     Kubernetes pods' identities are derived from the API server, not from
//     entries.
const (
	unixType = "unix"
	uidKey   = "uid:"
	gidKey   = "gid:"
)

// anyUser reports whether sels let any local user obtain the identity: they
// select by unix attributes, and none of them is unix:uid or unix:gid.
func anyUser(sels []*cav1.Selector) bool {
	unix, user := false, false
	for _, s := range sels {
		if s.GetType() != unixType {
			continue
		}
		unix = true
		if strings.HasPrefix(s.GetValue(), uidKey) || strings.HasPrefix(s.GetValue(), gidKey) {
			user = true
		}
	}
	return unix && !user
}

// checkUnixPolicy applies the unix selector rule to an entry to be created.
func checkUnixPolicy(ent *cav1.Entry) error {
	open := anyUser(ent.GetSelectors())
	switch {
	case open && !ent.GetAllowAnyUser():
		return invalidEntry(errors.New("entry has unix selectors but no unix:uid or unix:gid: unix:path and unix:sha256 only name an executable, " +
			"which any local user can run to obtain the identity. Add --selector unix:uid:N (or unix:gid:N) for the user the workload runs as, " +
			"or pass --allow-any-user (allow_any_user) to accept that any user on the node may obtain it"))
	case !open && ent.GetAllowAnyUser():
		return invalidEntry(errors.New("allow_any_user is set but the entry already restricts the caller by unix:uid or unix:gid, or has no unix selector; " +
			"drop --allow-any-user"))
	}
	return nil
}
