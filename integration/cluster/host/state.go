package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// sysctls are the kernel parameters the kubelet (its kernel tunables), the
// bridge plugin (ip_forward) and kube-proxy may change; Stop restores them.
var sysctls = []string{
	"kernel/panic", "kernel/panic_on_oops", "vm/overcommit_memory", "vm/panic_on_oom",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
	"net/ipv4/ip_forward", "net/ipv4/conf/all/route_localnet",
	"net/bridge/bridge-nf-call-iptables", "net/bridge/bridge-nf-call-ip6tables",
}

// hostPaths are paths outside the cluster directory that the kubelet,
// containerd's shims and the CNI plugins use whatever their configuration
// says. Stop removes those that did not exist before Start.
var hostPaths = []string{
	"/var/lib/kubelet", "/var/log/containers", "/var/log/pods", "/var/lib/cni", "/run/containerd",
}

// iptablesTables are the tables whose rules and chains Stop compares with
// the snapshot taken by Start.
var iptablesTables = []string{"filter", "nat", "mangle", "raw"}

// hostState is what Start recorded of the host before changing it. It is
// also saved as host.json in the cluster directory, so that the next Start
// can undo a killed test's cluster exactly (recoverStale).
type hostState struct {
	Sysctls   map[string]string   `json:"sysctls"`
	Existed   map[string]bool     `json:"existed"`  // hostPaths (and extra paths) present before Start
	IPTables  map[string][]string `json:"iptables"` // "iptables/nat" -> rules of iptables -t nat -S
	Links     []string            `json:"links"`    // network interfaces before Start
	Extra     []string            `json:"extra"`    // more host paths to remove at Stop
	AddedAddr bool                `json:"added_addr"`
}

// hostFile is the name of the saved hostState in the cluster directory.
const hostFile = "host.json"

// save writes h into dir (before each change it records is made).
func (h *hostState) save(dir string) error {
	b, err := json.Marshal(h)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, hostFile), b, 0o600)
}

// loadHost reads the hostState a cluster saved in dir.
func loadHost(dir string) (*hostState, error) {
	b, err := os.ReadFile(filepath.Join(dir, hostFile))
	if err != nil {
		return nil, err
	}
	h := &hostState{}
	if err := json.Unmarshal(b, h); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, hostFile), err)
	}
	return h, nil
}

// prepareHost records the host's state, refuses to run over a cluster (or
// its leftovers) and adds NodeIP to lo.
func prepareHost(p paths) (*hostState, error) {
	h := &hostState{Sysctls: map[string]string{}, Existed: map[string]bool{}, IPTables: map[string][]string{}}
	if leftovers := foreignClusterState(); len(leftovers) > 0 {
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
	if err := h.save(p.dir); err != nil {
		return nil, err
	}
	if _, err := run(10*time.Second, "ip", "addr", "add", NodeIP+"/32", "dev", "lo"); err != nil {
		return nil, err
	}
	return h, nil
}

// foreignClusterState lists signs of a cluster already on the host.
func foreignClusterState() []string {
	var found []string
	for _, cg := range kubepodsCgroups() {
		found = append(found, "cgroup "+cg)
	}
	if exists(filepath.Join("/sys/class/net", Bridge)) {
		found = append(found, "bridge "+Bridge)
	}
	if out, err := run(5*time.Second, "ip", "-o", "addr", "show", "dev", "lo"); err == nil && strings.Contains(out, " "+NodeIP+"/") {
		found = append(found, "address "+NodeIP+" on lo")
	}
	return found
}

// RemoveAtStop asks Stop to remove a host path outside the cluster
// directory (for example a DaemonSet's hostPath) if it did not exist before
// this call.
func (c *Cluster) RemoveAtStop(path string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, seen := c.host.Existed[path]; !seen {
		c.host.Existed[path] = exists(path)
		c.host.Extra = append(c.host.Extra, path)
		if err := c.host.save(c.paths.dir); err != nil {
			c.t.Errorf("cluster: saving the host state: %v", err)
		}
	}
}

// snapshotIPTables returns the rules (iptables -S) of every table, IPv4 and IPv6.
func snapshotIPTables() (map[string][]string, error) {
	snap := map[string][]string{}
	for _, cmd := range []string{"iptables", "ip6tables"} {
		for _, table := range iptablesTables {
			out, err := run(30*time.Second, cmd, "-w", "5", "-t", table, "-S")
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
// before Start, then flushes and deletes the chains created since.
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
				if _, err := run(10*time.Second, cmd, args...); err != nil {
					errs = append(errs, err)
				}
			}
		}
		for _, ch := range chains { // flush all first: chains jump to each other
			if _, err := run(10*time.Second, cmd, "-w", "5", "-t", table, "-F", ch); err != nil {
				errs = append(errs, err)
			}
		}
		for _, ch := range chains {
			if _, err := run(10*time.Second, cmd, "-w", "5", "-t", table, "-X", ch); err != nil {
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
