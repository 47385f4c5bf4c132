package logcheck

import "fmt"

// Mode is the agent's log policy (--log-policy).
type Mode int

// Log policies.
const (
	// Off: certificates are served without checking the log.
	Off Mode = iota
	// Monitor: certificates are served at once and checked in the
	// background; a certificate not proven in time raises an alarm.
	Monitor
	// Enforce: a certificate is served only once its inclusion in a
	// witnessed checkpoint is proven.
	Enforce
)

// ParseMode parses "off", "monitor" or "enforce".
func ParseMode(s string) (Mode, error) {
	switch s {
	case "off":
		return Off, nil
	case "monitor":
		return Monitor, nil
	case "enforce":
		return Enforce, nil
	}
	return Off, fmt.Errorf("log policy %q: want enforce, monitor or off", s)
}

// String returns the flag form of m.
func (m Mode) String() string {
	switch m {
	case Monitor:
		return "monitor"
	case Enforce:
		return "enforce"
	}
	return "off"
}
