// Package host owns what the test cluster (package cluster) changes on the
// machine: it records the host's state before the cluster starts (sysctls,
// iptables rules, network interfaces, host paths the components hard-code),
// saved in the cluster directory, and undoes every change afterwards —
// the cluster's leftover processes and containers, mounts, kubepods cgroups,
// bridge, node address, iptables rules and chains, sysctls and host paths —
// also for a cluster whose test process was killed (RecoverStale). It
// lists what would survive (Leftovers) and holds the host-wide lock that
// lets one cluster run at a time (Lock).
package host

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/castellan-dev/castellan/integration/cluster/proc"
)

// sysctls are the kernel parameters the kubelet (its kernel tunables), the
// bridge plugin (ip_forward) and kube-proxy may change; Undo restores them.
var sysctls = []string{
	"kernel/panic", "kernel/panic_on_oops", "vm/overcommit_memory", "vm/panic_on_oom",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
	"net/ipv4/ip_forward", "net/ipv4/conf/all/route_localnet",
	"net/bridge/bridge-nf-call-iptables", "net/bridge/bridge-nf-call-ip6tables",
}

// hostPaths are paths outside the cluster directory that the kubelet,
// containerd's shims and the CNI plugins use whatever their configuration
// says. Undo removes those that did not exist before the cluster started.
var hostPaths = []string{
	"/var/lib/kubelet", "/var/log/containers", "/var/log/pods", "/var/lib/cni", "/run/containerd",
}

// iptablesTables are the tables whose rules and chains Undo compares with
// the snapshot taken by Prepare.
var iptablesTables = []string{"filter", "nat", "mangle", "raw"}

// Network names what a cluster adds to the host's network.
type Network struct {
	NodeIP     string // the node's address, added as a /32 to lo
	Bridge     string // the pods' Linux bridge
	CNINetwork string // the CNI network, whose results it leaves in /var/lib/cni
}

// State is what Prepare recorded of the host before changing it. It is
// also saved as host.json in the cluster directory, so that the next
// cluster can undo a killed test's cluster exactly (RecoverStale). Its
// fields are exported for encoding/json; callers use its methods.
type State struct {
	Sysctls   map[string]string   `json:"sysctls"`
	Existed   map[string]bool     `json:"existed"`  // hostPaths (and extra paths) present before the cluster started
	IPTables  map[string][]string `json:"iptables"` // "iptables/nat" -> rules of iptables -t nat -S
	Links     []string            `json:"links"`    // network interfaces before the cluster started
	Extra     []string            `json:"extra"`    // more host paths to remove at Undo
	AddedAddr bool                `json:"added_addr"`

	dir string     // the cluster directory
	net Network    // what the cluster adds to the network
	mu  sync.Mutex // guards Existed and Extra (RemoveAtUndo)
}

// hostFile is the name of the saved State in the cluster directory.
const hostFile = "host.json"

// save writes h into its directory (before each change it records is made).
func (h *State) save() error {
	b, err := json.Marshal(h)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(h.dir, hostFile), b, 0o600)
}

// load reads the State a cluster on net saved in dir.
func load(dir string, net Network) (*State, error) {
	b, err := os.ReadFile(filepath.Join(dir, hostFile))
	if err != nil {
		return nil, err
	}
	h := &State{dir: dir, net: net}
	if err := json.Unmarshal(b, h); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, hostFile), err)
	}
	return h, nil
}

// Prepare records the host's state in the cluster directory dir, refuses
// to run over a cluster (or its leftovers) and adds net's node address to
// lo.
func Prepare(dir string, net Network) (*State, error) {
	h := &State{Sysctls: map[string]string{}, Existed: map[string]bool{}, IPTables: map[string][]string{}, dir: dir, net: net}
	if leftovers := ForeignState(net); len(leftovers) > 0 {
		return nil, fmt.Errorf("the host already has cluster state (another cluster, or a crashed run's leftovers): %s", strings.Join(leftovers, "; "))
	}
	for _, s := range sysctls {
		if b, err := os.ReadFile(filepath.Join("/proc/sys", s)); err == nil {
			h.Sysctls[s] = strings.TrimSpace(string(b))
		}
	}
	for _, path := range hostPaths {
		h.Existed[path] = exists(path)
	}
	var err error
	if h.IPTables, err = snapshotIPTables(); err != nil {
		return nil, err
	}
	h.Links = links()
	h.AddedAddr = true // saved before the change, so that a recovery undoes it
	if err := h.save(); err != nil {
		return nil, err
	}
	if _, err := proc.Run(10*time.Second, "ip", "addr", "add", net.NodeIP+"/32", "dev", "lo"); err != nil {
		return nil, err
	}
	return h, nil
}

// ForeignState lists signs of a cluster on net already on the host.
func ForeignState(net Network) []string {
	var found []string
	for _, cg := range kubepodsCgroups() {
		found = append(found, "cgroup "+cg)
	}
	if exists(filepath.Join("/sys/class/net", net.Bridge)) {
		found = append(found, "bridge "+net.Bridge)
	}
	if hasNodeAddress(net) {
		found = append(found, "address "+net.NodeIP+" on lo")
	}
	return found
}

// hasNodeAddress reports whether net's node address is on lo.
func hasNodeAddress(net Network) bool {
	out, err := proc.Run(5*time.Second, "ip", "-o", "addr", "show", "dev", "lo")
	return err == nil && strings.Contains(out, " "+net.NodeIP+"/")
}

// RemoveAtUndo asks Undo to remove a host path outside the cluster
// directory (for example a DaemonSet's hostPath) if it did not exist before
// this call.
func (h *State) RemoveAtUndo(path string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, seen := h.Existed[path]; seen {
		return nil
	}
	h.Existed[path] = exists(path)
	h.Extra = append(h.Extra, path)
	return h.save()
}

// snapshotIPTables returns the rules (iptables -S) of every table, IPv4 and IPv6.
func snapshotIPTables() (map[string][]string, error) {
	snap := map[string][]string{}
	for _, cmd := range []string{"iptables", "ip6tables"} {
		for _, table := range iptablesTables {
			out, err := proc.Run(30*time.Second, cmd, "-w", "5", "-t", table, "-S")
			if err != nil {
				return nil, err
			}
			snap[cmd+"/"+table] = strings.Split(strings.TrimSpace(out), "\n")
		}
	}
	return snap, nil
}

// links lists the host's network interfaces.
func links() []string {
	entries, _ := os.ReadDir("/sys/class/net")
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// kubepodsCgroups lists the kubepods cgroup of every hierarchy.
func kubepodsCgroups() []string {
	var found []string
	hier, _ := os.ReadDir("/sys/fs/cgroup")
	for _, h := range hier {
		cg := filepath.Join("/sys/fs/cgroup", h.Name(), "kubepods")
		if exists(cg) {
			found = append(found, cg)
		}
	}
	if exists("/sys/fs/cgroup/kubepods") { // cgroup v2 only
		found = append(found, "/sys/fs/cgroup/kubepods")
	}
	return found
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil || !errors.Is(err, os.ErrNotExist)
}

// addedIPTables returns, per "cmd/table", the rules present now and not in
// the snapshot.
func addedIPTables(snap map[string][]string) (map[string][]string, error) {
	now, err := snapshotIPTables()
	if err != nil {
		return nil, err
	}
	added := map[string][]string{}
	for key, rules := range now {
		for _, r := range rules {
			if r != "" && !slices.Contains(snap[key], r) {
				added[key] = append(added[key], r)
			}
		}
	}
	return added, nil
}

// removeAddedIPTables deletes the rules added to chains that existed
// before the cluster started, then flushes and deletes the chains created since.
func removeAddedIPTables(snap map[string][]string) error {
	added, err := addedIPTables(snap)
	if err != nil {
		return err
	}
	var errs []error
	for key, rules := range added {
		cmd, table, _ := strings.Cut(key, "/")
		var chains []string
		for _, r := range rules {
			f := splitRule(r)
			switch {
			case len(f) == 2 && f[0] == "-N":
				chains = append(chains, f[1])
			case len(f) > 2 && f[0] == "-A" && !slices.Contains(rules, "-N "+f[1]):
				// A rule in a chain that existed before (a jump from
				// INPUT, say); rules in new chains go with the flush.
				args := append([]string{"-w", "5", "-t", table, "-D"}, f[1:]...)
				if _, err := proc.Run(10*time.Second, cmd, args...); err != nil {
					errs = append(errs, err)
				}
			}
		}
		for _, ch := range chains { // flush all first: chains jump to each other
			if _, err := proc.Run(10*time.Second, cmd, "-w", "5", "-t", table, "-F", ch); err != nil {
				errs = append(errs, err)
			}
		}
		for _, ch := range chains {
			if _, err := proc.Run(10*time.Second, cmd, "-w", "5", "-t", table, "-X", ch); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// splitRule splits an iptables -S line into arguments, honouring the
// double quotes iptables puts around comments.
func splitRule(line string) []string {
	var args []string
	var cur strings.Builder
	inQuote, have := false, false
	for i := 0; i < len(line); i++ {
		ch := line[i]
		switch {
		case ch == '\\' && inQuote && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
		case ch == '"':
			inQuote, have = !inQuote, true
		case ch == ' ' && !inQuote:
			if have {
				args = append(args, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteByte(ch)
			have = true
		}
	}
	if have {
		args = append(args, cur.String())
	}
	return args
}
