package integration_test

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/integration/cluster"
	"github.com/castellan-dev/castellan/integration/cluster/host"
)

// envClusterChild makes TestClusterRecoversAfterKilledTest run as the child
// that starts a cluster and is then killed.
const envClusterChild = "CASTELLAN_CLUSTER_CHILD"

// TestClusterRecoversAfterKilledTest kills (SIGKILL, no cleanup) a test
// process whose cluster runs a pod, as go test's -timeout does, and checks
// that the next cluster starts anyway — removing the dead one's
// containers, mounts, cgroups, network, iptables rules, sysctls and
// directory — and that after it the host is as it was before the killed
// test.
func TestClusterRecoversAfterKilledTest(t *testing.T) {
	if os.Getenv(envClusterChild) == "1" {
		clusterChild(t)
		return
	}
	host.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	before := hostSnapshot(t)
	child := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestClusterRecoversAfterKilledTest$", "-test.v")
	child.Env = append(os.Environ(), envClusterChild+"=1")
	child.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	child.Stderr = child.Stdout
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	var dir string
	sc := bufio.NewScanner(out)
	var lines []string
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if rest, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "child cluster ready in "); ok {
			dir = rest
			break
		}
	}
	if dir == "" {
		_ = child.Wait()
		t.Fatalf("the child's cluster never ran its pod:\n%s", strings.Join(lines, "\n"))
	}
	_ = syscall.Kill(-child.Process.Pid, syscall.SIGKILL) // the test process and anything in its group
	_ = child.Wait()
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("the killed child left no directory %s to recover (%v): the test proves nothing", dir, err)
	}

	c := cluster.Start(t)
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the killed cluster's directory %s survives the next Start (%v)", dir, err)
	}
	if err := c.Stop(); err != nil {
		t.Fatalf("teardown: %v", err)
	}
	if left := c.Leftovers(); len(left) > 0 {
		t.Fatalf("left behind:\n%s", strings.Join(left, "\n"))
	}
	if after := hostSnapshot(t); after != before {
		t.Errorf("the host differs from before the killed test:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// hostSnapshot records what a cluster changes on the host and must put
// back: the sysctls the kubelet and the bridge plugin set, the iptables
// rules, the network interfaces and lo's addresses.
func hostSnapshot(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, s := range []string{"kernel/panic", "kernel/panic_on_oops", "vm/overcommit_memory", "net/ipv4/ip_forward"} {
		v, err := os.ReadFile("/proc/sys/" + s)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString(s + "=" + strings.TrimSpace(string(v)) + "\n")
	}
	for _, args := range [][]string{
		{"iptables", "-w", "5", "-S"}, {"iptables", "-w", "5", "-t", "nat", "-S"}, {"ip6tables", "-w", "5", "-S"},
		{"ip", "-o", "link", "show"}, {"ip", "-o", "addr", "show", "dev", "lo"},
	} {
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
		b.Write(out)
	}
	return b.String()
}

// clusterChild starts a cluster with a running pod, says where, and waits
// to be killed.
func clusterChild(t *testing.T) {
	c := cluster.Start(t)
	c.ImportGoBinary("./integration/cluster/podcheck", podcheckImage)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	createPodcheck(ctx, t, c.Client(), "default", "podcheck", "default")
	waitPodRunning(ctx, t, c.Client(), "default", "podcheck")
	os.Stdout.WriteString("child cluster ready in " + c.Dir() + "\n")
	<-ctx.Done() // killed long before
}
