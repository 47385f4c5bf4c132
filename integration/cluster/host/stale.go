package host

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/castellan-dev/castellan/integration/cluster/proc"
)

// clusterDirName matches the directories the cluster creates (os.MkdirTemp
// "cstl-*"), not the "-logs" directories a failed test keeps.
var clusterDirName = regexp.MustCompile(`^cstl-[0-9]+$`)

// RecoverStale undoes what an earlier cluster on net left when its test
// process died without tearing down (a go test -timeout panic, a SIGKILL):
// with the host state it saved (host.json) exactly as Undo would — containers and
// shims, mounts, kubepods cgroups, bridge, node address, the iptables rules
// and chains added since, sysctls, host paths — and its directory. Without
// host.json (killed before it was written) it removes what it can
// recognise: the containers, mounts, cgroups, bridge, address and every
// KUBE-* and CNI-* chain. It must be called with the host lock held: then
// no live cluster owns any of it. Cluster state with no directory of ours
// is left alone (Prepare then refuses to run). It returns the
// directories it recovered.
func RecoverStale(net Network) ([]string, error) {
	dirs, err := staleDirs()
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, dir := range dirs {
		h, err := load(dir, net)
		if err != nil {
			errs = append(errs, recoverUnrecorded(dir, net))
			continue
		}
		errs = append(errs, h.Undo(nil))
	}
	return dirs, errors.Join(errs...)
}

// recoverUnrecorded is RecoverStale for a directory without host.json.
func recoverUnrecorded(dir string, net Network) error {
	errs := []error{KillContainers(dir, nil), unmountUnder(dir), removeKubepodsCgroups()}
	for _, found := range ForeignState(net) {
		switch {
		case strings.HasPrefix(found, "bridge "):
			_, err := proc.Run(10*time.Second, "ip", "link", "del", net.Bridge)
			errs = append(errs, err)
		case strings.HasPrefix(found, "address "):
			_, err := proc.Run(10*time.Second, "ip", "addr", "del", net.NodeIP+"/32", "dev", "lo")
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
