package config

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/castellan-dev/castellan/ca/quota"
	"github.com/prometheus/client_golang/prometheus"
)

// defaultDiskReserve is --ledger-disk-reserve's default: room for the CA's
// own SVID renewals, bbolt's growth steps and an operator's repair.
const defaultDiskReserve = 512 << 20

// ByteSize is a size flag: a number of bytes with an optional binary
// (KiB, MiB, GiB, TiB) or decimal (KB, MB, GB, TB) unit.
type ByteSize uint64

var sizeUnits = []struct {
	suffix string
	mult   uint64
}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1}}

func (b *ByteSize) String() string { return strconv.FormatUint(uint64(*b), 10) }

// Set parses s, e.g. 512MiB.
func (b *ByteSize) Set(s string) error {
	num, mult := strings.TrimSpace(s), uint64(1)
	for _, u := range sizeUnits {
		if n, ok := strings.CutSuffix(num, u.suffix); ok {
			num, mult = strings.TrimSpace(n), u.mult
			break
		}
	}
	n, err := strconv.ParseUint(num, 10, 64)
	if err != nil || (n != 0 && n*mult/mult != n) {
		return fmt.Errorf("%q is not a size such as 512MiB or 2GiB", s)
	}
	*b = ByteSize(n * mult)
	return nil
}

// UnmarshalText reads the size from the YAML file.
func (b *ByteSize) UnmarshalText(text []byte) error { return b.Set(string(text)) }

// checkQuota validates the quota flags.
func (c Config) checkQuota() error {
	if c.QuotaNodeBurst < 0 || c.QuotaNodePerHour < 0 || c.QuotaIdentityPerTTL < 0 {
		return errors.New("--quota-node-burst, --quota-node-per-hour and --quota-identity-per-ttl must not be negative (0: the default)")
	}
	return nil
}

// Quotas returns the issuance quotas: quota.Defaults for the default
// TTL, overridden by the flags that are set.
func (c Config) Quotas(reg prometheus.Registerer) quota.Config {
	q := quota.Defaults(c.DefaultTTL)
	if c.QuotaNodeBurst > 0 {
		q.Node.Burst = c.QuotaNodeBurst
	}
	if c.QuotaNodePerHour > 0 {
		q.Node.Every = time.Hour / time.Duration(c.QuotaNodePerHour)
	}
	if c.QuotaIdentityPerTTL > 0 {
		q.IdentityPerTTL = c.QuotaIdentityPerTTL
	}
	q.Registry = reg
	return q
}

// AdmissionCapacity maps --max-csrs-in-flight (0: unbounded) to
// server.Config.MaxCSRsInFlight (negative: unbounded).
func (c Config) AdmissionCapacity() int {
	if c.MaxCSRsInFlight == 0 {
		return -1
	}
	return c.MaxCSRsInFlight
}
