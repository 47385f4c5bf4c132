// Package procstat reads what Linux's /proc says about another process, for
// benchmarks that measure a server in its own process (bench/storm,
// bench/compare).
package procstat

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// ticksPerSecond is Linux's USER_HZ, the unit of /proc/PID/stat times.
const ticksPerSecond = 100

// CPU returns the CPU time (user + system, every thread) process pid has
// used, from /proc/PID/stat.
func CPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("procstat: %w", err)
	}
	return parseCPU(string(b))
}

// parseCPU reads utime and stime (fields 14 and 15) from a /proc/PID/stat
// line. The command name (field 2) may hold spaces and parentheses: fields
// are counted from the last ')'.
func parseCPU(stat string) (time.Duration, error) {
	end := strings.LastIndexByte(stat, ')')
	if end < 0 {
		return 0, errors.New("procstat: /proc/PID/stat has no command name")
	}
	f := strings.Fields(stat[end+1:])
	if len(f) < 13 {
		return 0, errors.New("procstat: short /proc/PID/stat")
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("procstat: %w", err)
	}
	return time.Duration(utime+stime) * time.Second / ticksPerSecond, nil
}
