package cluster

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
)

// clusterDirName matches the directories Start creates (os.MkdirTemp
// "cstl-*"), not the "-logs" directories a failed test keeps.
var clusterDirName = regexp.MustCompile(`^cstl-[0-9]+$`)

// recoverStale undoes what an earlier cluster left when its test process
// died without tearing down (a go test -timeout panic, a SIGKILL): with the
// host state it saved (host.json) exactly as Stop would — containers and
// shims, mounts, kubepods cgroups, bridge, node address, the iptables rules
// and chains added since, sysctls, host paths — and its directory. Without
// host.json (killed before it was written) it removes what it can
// recognise: the containers, mounts, cgroups, bridge, address and every
// KUBE-* and CNI-* chain. It must be called with the host lock held: then
// no live cluster owns any of it. Cluster state with no directory of ours
// is left alone (prepareHost then refuses to run). It returns the
// directories it recovered.
func recoverStale() ([]string, error) {
	dirs, err := staleDirs()
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, dir := range dirs {
		h, err := loadHost(dir)
		if err != nil {
			errs = append(errs, recoverUnrecorded(dir))
			continue
		}
		c := &Cluster{paths: newPaths(dir), host: h}
		errs = append(errs, c.teardown())
	}
	return dirs, errors.Join(errs...)
}

// recoverUnrecorded is recoverStale for a directory without host.json.
func recoverUnrecorded(dir string) error {
	c := &Cluster{paths: newPaths(dir), host: &hostState{}}
	errs := []error{c.killContainers(), unmountUnder(dir), removeKubepodsCgroups()}
	for _, found := range foreignClusterState() {
		switch {
		case strings.HasPrefix(found, "bridge "):
			_, err := run(10*time.Second, "ip", "link", "del", Bridge)
			errs = append(errs, err)
		case strings.HasPrefix(found, "address "):
			_, err := run(10*time.Second, "ip", "addr", "del", NodeIP+"/32", "dev", "lo")
			errs = append(errs, err)
		}
	}
	snap, err := snapshotIPTables()
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for key, rules := range snap { // what stays: every rule not naming a cluster chain
		snap[key] = slices.DeleteFunc(rules, func(r string) bool { return strings.Contains(r, "KUBE-") || strings.Contains(r, "CNI-") })
	}
	errs = append(errs, removeAddedIPTables(snap), os.RemoveAll(dir))
	return errors.Join(errs...)
}

// staleDirs lists the cluster directories in the temporary directory.
func staleDirs() ([]string, error) {
	entries, err := os.ReadDir(os.TempDir())
	if err != nil {
		return nil, err
	}
	var dirs []string
	for _, e := range entries {
		d := filepath.Join(os.TempDir(), e.Name())
		if e.IsDir() && clusterDirName.MatchString(e.Name()) && exists(filepath.Join(d, "containerd")) {
			dirs = append(dirs, d)
		}
	}
	return dirs, nil
}
