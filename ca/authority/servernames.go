package authority

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// ServerNames are the DNS names and IP addresses SignServer puts in the
// server's certificate next to its SPIFFE ID. Build them with
// ParseServerNames.
type ServerNames struct {
	DNSNames    []string
	IPAddresses []net.IP
}

// maxDNSNameLen is the longest DNS name in text form (RFC 1035 2.3.4,
// without the trailing dot).
const maxDNSNameLen = 253

// ParseServerNames sorts names into DNS names and IP addresses and validates
// them: an IP address (IPv4 or IPv6, no zone) or a DNS name of letters,
// digits and hyphens in dot-separated labels of 1 to 63 characters, no label
// starting or ending with a hyphen, at most 253 characters, no trailing dot
// and no wildcard. DNS names are lower-cased (host names compare without
// case); duplicates are dropped.
func ParseServerNames(names []string) (ServerNames, error) {
	var out ServerNames
	seen := map[string]bool{}
	for _, n := range names {
		if addr, err := netip.ParseAddr(n); err == nil {
			if addr.Zone() != "" {
				return ServerNames{}, fmt.Errorf("server name %q: an IP address in a certificate has no zone", n)
			}
			addr = addr.Unmap()
			if seen[addr.String()] {
				continue
			}
			seen[addr.String()] = true
			out.IPAddresses = append(out.IPAddresses, net.IP(addr.AsSlice()))
			continue
		}
		if err := ValidateDNSName(n); err != nil {
			return ServerNames{}, err
		}
		n = strings.ToLower(n)
		if seen[n] {
			continue
		}
		seen[n] = true
		out.DNSNames = append(out.DNSNames, n)
	}
	return out, nil
}

// ValidateDNSName checks that name is a host name a certificate may carry
// as a DNS SAN (the rules of ParseServerNames).
func ValidateDNSName(name string) error {
	bad := func(why string) error {
		return fmt.Errorf("server name %q is not an IP address or a valid DNS name: %s (e.g. castellan-ca.castellan-system.svc or 10.0.0.1)", name, why)
	}
	switch {
	case name == "":
		return bad("it is empty")
	case len(name) > maxDNSNameLen:
		return bad(fmt.Sprintf("it is longer than %d characters", maxDNSNameLen))
	case strings.HasSuffix(name, "."):
		return bad("it ends with a dot")
	}
	for label := range strings.SplitSeq(name, ".") {
		switch {
		case label == "":
			return bad("it has an empty label")
		case label == "*":
			return bad("wildcards are not accepted")
		case len(label) > 63:
			return bad(fmt.Sprintf("label %q is longer than 63 characters", label))
		case label[0] == '-' || label[len(label)-1] == '-':
			return bad(fmt.Sprintf("label %q starts or ends with a hyphen", label))
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return bad(fmt.Sprintf("character %q is not a letter, digit or hyphen", c))
			}
		}
	}
	return nil
}

// check re-validates names built by hand rather than by ParseServerNames.
func (n ServerNames) check() error {
	for _, d := range n.DNSNames {
		if err := ValidateDNSName(d); err != nil {
			return err
		}
	}
	for _, ip := range n.IPAddresses {
		if len(ip) != net.IPv4len && len(ip) != net.IPv6len {
			return fmt.Errorf("server IP address %v is not an IPv4 or IPv6 address", ip)
		}
	}
	return nil
}
