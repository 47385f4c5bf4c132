package host

import (
	"bufio"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/castellan-dev/castellan/integration/cluster/proc"
)

// Undo undoes the cluster's changes to the host, collecting every
// failure: it kills the cluster's remaining processes except spare (the
// components still running), unmounts everything under the cluster
// directory, removes the kubepods cgroups, the network, the iptables rules
// and chains added since Prepare, restores the sysctls, removes the host
// paths and the cluster directory, and reports what is left.
func (h *State) Undo(spare []int) error {
	var errs []error
	note := func(what string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", what, err))
		}
	}
	note("killing containers", KillContainers(h.dir, spare)) // containerd may not have started
	note("unmounting", unmountUnder(h.dir))
	note("removing cgroups", removeKubepodsCgroups())
	note("removing the network", h.removeNetwork())
	note("removing iptables rules", removeAddedIPTables(h.IPTables))
	note("restoring sysctls", h.restoreSysctls())
	note("removing host paths", h.removeHostPaths())
	note("removing "+h.dir, os.RemoveAll(h.dir))
	if left := h.Leftovers(); len(left) > 0 {
		errs = append(errs, fmt.Errorf("left behind: %s", strings.Join(left, "; ")))
	}
	return errors.Join(errs...)
}

// clusterPIDs returns the processes of the cluster in dir that outlive its
// components: the shims started by its containerd (their command line
// names its socket, under the cluster directory), their descendants (the
// pause and application processes), and anything in a kubepods cgroup.
func clusterPIDs(dir string) []int {
	parent := map[int]int{}
	var roots []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if ppid, ok := readPPID(pid); ok {
			parent[pid] = ppid
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if strings.Contains(string(cmdline), dir+"/") || inKubepods(pid) {
			roots = append(roots, pid)
		}
	}
	set := map[int]bool{}
	for _, r := range roots {
		set[r] = true
	}
	for changed := true; changed; { // add descendants until nothing changes
		changed = false
		for pid, ppid := range parent {
			if set[ppid] && !set[pid] {
				set[pid], changed = true, true
			}
		}
	}
	pids := make([]int, 0, len(set))
	for pid := range set {
		pids = append(pids, pid)
	}
	sort.Ints(pids)
	return pids
}

// KillContainers SIGKILLs the shims and containers of the cluster in dir
// and waits (at most 20 s) until they are gone. Component processes still
// running are included (they are in the cluster directory's command
// lines), except spare: those the cluster stops itself.
func KillContainers(dir string, spare []int) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		pids := slices.DeleteFunc(clusterPIDs(dir), func(pid int) bool { return slices.Contains(spare, pid) })
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v survive SIGKILL", pids)
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// readPPID reads the parent PID from /proc/pid/stat.
func readPPID(pid int) (int, bool) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')') // the command may contain spaces and parens
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return 0, false
	}
	ppid, err := strconv.Atoi(f[1])
	return ppid, err == nil
}

// inKubepods reports whether pid is in a kubepods cgroup.
func inKubepods(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cgroup"))
	return err == nil && strings.Contains(string(b), ":/kubepods")
}

// mountsUnder lists the mount points at or under dir, deepest first.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var found []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			found = append(found, mp)
		}
	}
	sort.Slice(found, func(i, j int) bool { return len(found[i]) > len(found[j]) })
	return found
}

// unescapeMount decodes the octal escapes (\040 for space) of mountinfo.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// unmountUnder unmounts everything at or under dir, deepest first,
// repeating (at most 20 rounds) for mounts stacked on one point.
func unmountUnder(dir string) error {
	for round := 0; round < 20; round++ {
		mps := mountsUnder(dir)
		if len(mps) == 0 {
			return nil
		}
		for _, mp := range mps {
			_ = syscall.Unmount(mp, syscall.MNT_DETACH)
		}
	}
	return fmt.Errorf("still mounted: %v", mountsUnder(dir))
}

// removeKubepodsCgroups removes the kubepods cgroup tree of every
// hierarchy, leaves first, retrying for up to 10 s while exiting processes
// let go of them.
func removeKubepodsCgroups() error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		var failed []string
		for _, root := range kubepodsCgroups() {
			if err := removeCgroupTree(root); err != nil {
				failed = append(failed, err.Error())
			}
		}
		if len(failed) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New(strings.Join(failed, "; "))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// removeCgroupTree rmdirs the cgroup directories under root, bottom-up.
func removeCgroupTree(root string) error {
	var dirs []string
	_ = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, path)
		}
		return nil
	})
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	var first error
	for _, d := range dirs {
		if err := syscall.Rmdir(d); err != nil && !errors.Is(err, syscall.ENOENT) && first == nil {
			first = fmt.Errorf("rmdir %s: %w", d, err)
		}
	}
	return first
}

// removeNetwork deletes the bridge and the node address, then waits (at
// most 10 s) for the pods' veths to disappear with their namespaces.
func (h *State) removeNetwork() error {
	var errs []error
	if exists(filepath.Join("/sys/class/net", h.net.Bridge)) {
		if _, err := proc.Run(10*time.Second, "ip", "link", "del", h.net.Bridge); err != nil {
			errs = append(errs, err)
		}
	}
	if h.AddedAddr {
		if _, err := proc.Run(10*time.Second, "ip", "addr", "del", h.net.NodeIP+"/32", "dev", "lo"); err != nil {
			errs = append(errs, err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(h.newLinks()) > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	for _, l := range h.newLinks() { // a veth whose namespace is gone is already gone; this is a last resort
		if _, err := proc.Run(10*time.Second, "ip", "link", "del", l); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// newLinks lists network interfaces created since Prepare.
func (h *State) newLinks() []string {
	var added []string
	for _, l := range links() {
		if !slices.Contains(h.Links, l) {
			added = append(added, l)
		}
	}
	return added
}

// restoreSysctls writes back every recorded sysctl that changed.
func (h *State) restoreSysctls() error {
	var errs []error
	for name, old := range h.Sysctls {
		path := filepath.Join("/proc/sys", name)
		if b, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(b)) != old {
			if err := os.WriteFile(path, []byte(old), 0o644); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// removeHostPaths removes the hard-coded host paths (and those given to
// RemoveAtUndo) that did not exist before; where one existed, only this
// cluster's entries in it (CNI results of its sandboxes).
func (h *State) removeHostPaths() error {
	h.mu.Lock()
	paths := append(slices.Clone(hostPaths), h.Extra...)
	existed := maps.Clone(h.Existed)
	h.mu.Unlock()
	var errs []error
	for _, p := range paths {
		if err := unmountUnder(p); err != nil {
			errs = append(errs, err)
		}
		if !existed[p] {
			if err := os.RemoveAll(p); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if existed["/var/lib/cni"] {
		errs = append(errs, removeCNIResults("/var/lib/cni/results", h.net.CNINetwork))
	}
	return errors.Join(errs...)
}

// removeCNIResults removes the results the CNI library cached in dir for
// the sandboxes of network ("<network>-<sandbox ID>-<interface>") and
// those containerd's loopback network cached for the same sandboxes
// ("cni-loopback-<sandbox ID>-lo"): a sandbox whose network was never torn
// down (its containerd killed) leaves both.
func removeCNIResults(dir, network string) error {
	ours, _ := filepath.Glob(filepath.Join(dir, network+"-*"))
	var errs []error
	for _, f := range ours {
		id := strings.TrimPrefix(filepath.Base(f), network+"-")
		if i := strings.LastIndexByte(id, '-'); i > 0 {
			lo := filepath.Join(dir, "cni-loopback-"+id[:i]+"-lo")
			if err := os.Remove(lo); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
		errs = append(errs, os.Remove(f))
	}
	return errors.Join(errs...)
}

// Leftovers lists what the cluster left on the host: its processes and
// containers, mounts under its directory, kubepods cgroups, iptables rules
// or chains added since Prepare, new network interfaces (bridge, veths),
// the node address, changed sysctls, host paths it created, its directory.
// Empty after a clean Undo.
func (h *State) Leftovers() []string {
	var left []string
	for _, pid := range clusterPIDs(h.dir) {
		cmdline, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
		left = append(left, fmt.Sprintf("process %d (%s)", pid, strings.ReplaceAll(string(cmdline), "\x00", " ")))
	}
	for _, mp := range mountsUnder(h.dir) {
		left = append(left, "mount "+mp)
	}
	for _, cg := range kubepodsCgroups() {
		left = append(left, "cgroup "+cg)
	}
	added, err := addedIPTables(h.IPTables)
	if err != nil {
		left = append(left, "iptables unreadable: "+err.Error())
	}
	for key, rules := range added {
		for _, r := range rules {
			left = append(left, key+": "+r)
		}
	}
	for _, l := range h.newLinks() {
		left = append(left, "network interface "+l)
	}
	if hasNodeAddress(h.net) {
		left = append(left, "address "+h.net.NodeIP+" on lo")
	}
	for name, old := range h.Sysctls {
		if b, err := os.ReadFile(filepath.Join("/proc/sys", name)); err == nil && strings.TrimSpace(string(b)) != old {
			left = append(left, fmt.Sprintf("sysctl %s = %s (was %s)", name, strings.TrimSpace(string(b)), old))
		}
	}
	h.mu.Lock()
	for p, existed := range h.Existed {
		if !existed && exists(p) {
			left = append(left, "path "+p)
		}
	}
	h.mu.Unlock()
	if exists(h.dir) {
		left = append(left, "directory "+h.dir)
	}
	sort.Strings(left)
	return left
}
