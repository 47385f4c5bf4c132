package cluster

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// teardown stops everything Start started and undoes its changes to the
// host, collecting every failure.
func (c *Cluster) teardown() error {
	var errs []error
	note := func(what string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", what, err))
		}
	}
	c.mu.Lock()
	procs := slices.Clone(c.procs)
	c.mu.Unlock()
	slices.Reverse(procs) // kube-proxy, kubelet, scheduler, controller-manager, containerd, apiserver
	for _, p := range procs {
		if p.name == "containerd" {
			note("killing containers", c.killContainers())
		}
		note("stopping "+p.name, p.stop(stopGrace))
	}
	if c.host == nil { // prepareHost failed: nothing was changed
		return errors.Join(append(errs, os.RemoveAll(c.paths.dir))...)
	}
	note("killing containers", c.killContainers()) // containerd may not have started
	note("unmounting", unmountUnder(c.paths.dir))
	note("removing cgroups", removeKubepodsCgroups())
	note("removing the network", c.removeNetwork())
	note("removing iptables rules", removeAddedIPTables(c.host.IPTables))
	note("restoring sysctls", c.restoreSysctls())
	note("removing host paths", c.removeHostPaths())
	note("removing "+c.paths.dir, os.RemoveAll(c.paths.dir))
	if left := c.Leftovers(); len(left) > 0 {
		errs = append(errs, fmt.Errorf("left behind: %s", strings.Join(left, "; ")))
	}
	return errors.Join(errs...)
}

// clusterPIDs returns the processes of this cluster that outlive its
// components: the shims started by this containerd (their command line
// names its socket, under the cluster directory), their descendants (the
// pause and application processes), and anything in a kubepods cgroup.
func (c *Cluster) clusterPIDs() []int {
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
		if strings.Contains(string(cmdline), c.paths.dir+"/") || inKubepods(pid) {
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

// killContainers SIGKILLs the shims and containers of this cluster and
// waits (at most 20 s) until they are gone. Component processes still
// running are included: they are in the cluster directory's command lines.
func (c *Cluster) killContainers() error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		pids := c.containerPIDs()
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

// containerPIDs is clusterPIDs without the components Stop stops itself.
func (c *Cluster) containerPIDs() []int {
	c.mu.Lock()
	own := map[int]bool{}
	for _, p := range c.procs {
		select {
		case <-p.exited:
		default:
			own[p.cmd.Process.Pid] = true
		}
	}
	c.mu.Unlock()
	var pids []int
	for _, pid := range c.clusterPIDs() {
		if !own[pid] {
			pids = append(pids, pid)
		}
	}
	return pids
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
func (c *Cluster) removeNetwork() error {
	var errs []error
	if exists(filepath.Join("/sys/class/net", Bridge)) {
		if _, err := run(10*time.Second, "ip", "link", "del", Bridge); err != nil {
			errs = append(errs, err)
		}
	}
	if c.host.AddedAddr {
		if _, err := run(10*time.Second, "ip", "addr", "del", NodeIP+"/32", "dev", "lo"); err != nil {
			errs = append(errs, err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(c.newLinks()) > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	for _, l := range c.newLinks() { // a veth whose namespace is gone is already gone; this is a last resort
		if _, err := run(10*time.Second, "ip", "link", "del", l); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// newLinks lists network interfaces created since Start.
func (c *Cluster) newLinks() []string {
	var added []string
	for _, l := range links() {
		if !slices.Contains(c.host.Links, l) {
			added = append(added, l)
		}
	}
	return added
}

// restoreSysctls writes back every recorded sysctl that changed.
func (c *Cluster) restoreSysctls() error {
	var errs []error
	for name, old := range c.host.Sysctls {
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
// RemoveAtStop) that did not exist before; where one existed, only this
// cluster's entries in it (CNI results named by its network).
func (c *Cluster) removeHostPaths() error {
	c.mu.Lock()
	paths := append(slices.Clone(hostPaths), c.host.Extra...)
	c.mu.Unlock()
	var errs []error
	for _, p := range paths {
		if err := unmountUnder(p); err != nil {
			errs = append(errs, err)
		}
		if !c.host.Existed[p] {
			if err := os.RemoveAll(p); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if c.host.Existed["/var/lib/cni"] {
		ours, _ := filepath.Glob("/var/lib/cni/results/" + CNINetwork + "-*")
		for _, f := range ours {
			errs = append(errs, os.Remove(f))
		}
	}
	return errors.Join(errs...)
}

// Leftovers lists what this cluster left on the host: its processes and
// containers, mounts under its directory, kubepods cgroups, iptables rules
// or chains added since Start, new network interfaces (bridge, veths), the
// node address, changed sysctls, host paths it created, its directory.
// Empty after a clean Stop.
func (c *Cluster) Leftovers() []string {
	var left []string
	for _, pid := range c.clusterPIDs() {
		cmdline, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
		left = append(left, fmt.Sprintf("process %d (%s)", pid, strings.ReplaceAll(string(cmdline), "\x00", " ")))
	}
	for _, mp := range mountsUnder(c.paths.dir) {
		left = append(left, "mount "+mp)
	}
	for _, cg := range kubepodsCgroups() {
		left = append(left, "cgroup "+cg)
	}
	added, err := addedIPTables(c.host.IPTables)
	if err != nil {
		left = append(left, "iptables unreadable: "+err.Error())
	}
	for key, rules := range added {
		for _, r := range rules {
			left = append(left, key+": "+r)
		}
	}
	for _, l := range c.newLinks() {
		left = append(left, "network interface "+l)
	}
	if out, err := run(5*time.Second, "ip", "-o", "addr", "show", "dev", "lo"); err == nil && strings.Contains(out, " "+NodeIP+"/") {
		left = append(left, "address "+NodeIP+" on lo")
	}
	for name, old := range c.host.Sysctls {
		if b, err := os.ReadFile(filepath.Join("/proc/sys", name)); err == nil && strings.TrimSpace(string(b)) != old {
			left = append(left, fmt.Sprintf("sysctl %s = %s (was %s)", name, strings.TrimSpace(string(b)), old))
		}
	}
	for p, existed := range c.host.Existed {
		if !existed && exists(p) {
			left = append(left, "path "+p)
		}
	}
	if exists(c.paths.dir) {
		left = append(left, "directory "+c.paths.dir)
	}
	sort.Strings(left)
	return left
}
