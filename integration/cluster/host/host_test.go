package host

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/integration/cluster/proc"
)

func TestSplitRuleHonoursQuotes(t *testing.T) {
	got := splitRule(`-A KUBE-SERVICES -m comment --comment "kubernetes service \"a b\" portals" -j KUBE-SVC-X`)
	want := []string{"-A", "KUBE-SERVICES", "-m", "comment", "--comment", `kubernetes service "a b" portals`, "-j", "KUBE-SVC-X"}
	if !slices.Equal(got, want) {
		t.Fatalf("splitRule = %q, want %q", got, want)
	}
	if got := splitRule(`-N KUBE-X`); !slices.Equal(got, []string{"-N", "KUBE-X"}) {
		t.Fatalf("splitRule(-N) = %q", got)
	}
}

func TestUnescapeMountDecodesOctal(t *testing.T) {
	if got := unescapeMount(`/tmp/a\040b/c`); got != "/tmp/a b/c" {
		t.Fatalf("unescapeMount = %q", got)
	}
	if got := unescapeMount(`/plain`); got != "/plain" {
		t.Fatalf("unescapeMount = %q", got)
	}
}

// testNet is the cluster's network (package cluster's NodeIP, Bridge and
// CNINetwork), which tests here cannot import.
var testNet = Network{NodeIP: "10.250.13.1", Bridge: "cstl13br0", CNINetwork: "castellan-cluster"}

// TestUnmountUnderRemovesStackedAndNestedMounts mounts tmpfs twice on one
// point and once below it, as the kubelet's bind mounts stack, and checks
// unmountUnder leaves nothing, deepest first.
func TestUnmountUnderRemovesStackedAndNestedMounts(t *testing.T) {
	Require(t)
	dir := t.TempDir()
	top := filepath.Join(dir, "a")
	if err := os.MkdirAll(top, 0o700); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := syscall.Mount("tmpfs", top, "tmpfs", 0, "size=1m"); err != nil {
			t.Fatal(err)
		}
	}
	nested := filepath.Join(top, "b c")
	if err := os.Mkdir(nested, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", nested, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	if n := len(mountsUnder(dir)); n != 3 {
		t.Fatalf("mountsUnder found %d mounts, want 3: %v", n, mountsUnder(dir))
	}
	if err := unmountUnder(dir); err != nil {
		t.Fatal(err)
	}
	if left := mountsUnder(dir); len(left) != 0 {
		t.Fatalf("still mounted: %v", left)
	}
}

// TestRemoveAddedIPTablesRemovesOnlyNewRules adds a chain of its own and a
// jump to it (with a quoted comment) from OUTPUT, and checks that
// removeAddedIPTables removes both and nothing else.
func TestRemoveAddedIPTablesRemovesOnlyNewRules(t *testing.T) {
	Require(t)
	unlock, err := Lock(time.Minute) // no cluster may change iptables meanwhile
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	snap, err := snapshotIPTables()
	if err != nil {
		t.Fatal(err)
	}
	chain := "CSTL-TEST-" + strconv.Itoa(os.Getpid())
	for _, args := range [][]string{
		{"-w", "5", "-N", chain},
		{"-w", "5", "-A", chain, "-p", "tcp", "--dport", "9", "-j", "RETURN"},
		{"-w", "5", "-A", "OUTPUT", "-m", "comment", "--comment", "castellan cluster test", "-d", "192.0.2.1/32", "-j", chain},
	} {
		if _, err := proc.Run(10*time.Second, "iptables", args...); err != nil {
			_ = removeAddedIPTables(snap)
			t.Fatal(err)
		}
	}
	added, err := addedIPTables(snap)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(added["iptables/filter"]); n != 3 {
		t.Fatalf("addedIPTables saw %d new filter rules, want 3: %v", n, added)
	}
	if err := removeAddedIPTables(snap); err != nil {
		t.Fatal(err)
	}
	if added, err := addedIPTables(snap); err != nil || len(added) != 0 {
		t.Fatalf("after removal: %v %v", added, err)
	}
	after, err := snapshotIPTables()
	if err != nil {
		t.Fatal(err)
	}
	for key, rules := range snap {
		if !slices.Equal(after[key], rules) {
			t.Errorf("%s changed:\nbefore %q\nafter  %q", key, rules, after[key])
		}
	}
}

// TestForeignClusterStateIsNoticed creates a kubepods cgroup, as another
// cluster (or a crashed run) leaves, and checks Start's check sees it.
func TestForeignClusterStateIsNoticed(t *testing.T) {
	Require(t)
	unlock, err := Lock(time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	if _, err := RecoverStale(testNet); err != nil {
		t.Fatalf("undoing the clusters of killed tests: %v", err)
	}
	if found := ForeignState(testNet); len(found) != 0 {
		t.Fatalf("the host already has cluster state no test of ours left (another cluster?): %v", found)
	}
	cg := "/sys/fs/cgroup/pids/kubepods"
	if _, err := os.Stat("/sys/fs/cgroup/pids"); err != nil {
		cg = "/sys/fs/cgroup/kubepods" // cgroup v2
	}
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Fatal(err)
	}
	defer syscall.Rmdir(cg)
	found := ForeignState(testNet)
	if len(found) != 1 || !strings.Contains(found[0], cg) {
		t.Fatalf("ForeignState = %v, want the cgroup %s", found, cg)
	}
}

// TestRemoveCNIResultsRemovesOnlyThisNetworksSandboxes checks that the
// cached CNI results of the network's sandboxes go with their loopback
// results, and that another network's, and the loopback results of
// sandboxes not on the network, stay.
func TestRemoveCNIResultsRemovesOnlyThisNetworksSandboxes(t *testing.T) {
	dir := t.TempDir()
	ours, theirs := strings.Repeat("a", 64), strings.Repeat("b", 64)
	files := map[string]bool{ // name -> removed
		testNet.CNINetwork + "-" + ours + "-eth0": true,
		"cni-loopback-" + ours + "-lo":            true,
		"cni-loopback-" + theirs + "-lo":          false,
		"other-net-" + theirs + "-eth0":           false,
		"other-net-" + ours + "-eth0":             false,
	}
	for name := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("{}"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := removeCNIResults(dir, testNet.CNINetwork); err != nil {
		t.Fatal(err)
	}
	for name, removed := range files {
		_, err := os.Stat(filepath.Join(dir, name))
		if gone := errors.Is(err, os.ErrNotExist); gone != removed {
			t.Errorf("%s: removed = %v, want %v (%v)", name, gone, removed, err)
		}
	}
}
