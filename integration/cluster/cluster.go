// Package cluster runs a real single-node Kubernetes cluster on the test
// machine for Castellan's end-to-end tests: etcd and kube-apiserver
// (kube-testenv, integration/kube/testenv), kube-controller-manager,
// kube-scheduler, the kubelet and kube-proxy (kube-node,
// integration/kube/node), all Kubernetes v1.34.4; containerd, runc, the CNI
// plugins and iptables from Debian's packages; a pause image built here. No
// image is pulled: tests build theirs and Import them. Cluster DNS is
// CoreDNS (kube-coredns, integration/kube/coredns) behind the Service
// kube-system/kube-dns, so manifests use Service names unchanged.
//
// Start needs root and the environment variable CASTELLAN_CLUSTER=1
// (host.EnvEnable; the cluster changes the host: an address on lo, a
// bridge, iptables rules, cgroups under /kubepods, a few sysctls); without
// it the test is skipped.
// With CASTELLAN_CLUSTER=1 anything missing fails the test; missing Debian
// packages are installed with apt-get.
//
// The node is NodeName at NodeIP (a /32 on lo, the only address every
// component binds to besides 127.0.0.1). Its pods get addresses from
// PodCIDR on the bridge Bridge; Services from ServiceCIDR. Every file the
// cluster writes is under one temporary directory, except the few paths the
// kubelet, containerd and the CNI plugins hard-code (see package host).
//
// Stop (registered as a cleanup by Start) tears everything down: the
// components, every container and shim of this containerd, the mounts, the
// kubepods cgroups, the bridge, the node address, the iptables rules and
// chains added since Start, the sysctls the kubelet and the bridge plugin
// change, and the hard-coded host paths it created. Leftovers lists what
// would have survived. Only one cluster runs on a host at a time (the fixed
// names above and the /kubepods cgroup): Start waits for a host-wide lock,
// and then removes what a cluster whose test process was killed left.
//
// The parts live in packages named by what they own: host (recording and
// undoing the changes to the host, the host lock), proc (finding and
// supervising the programs), image (building images) and dns (CoreDNS).
package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/castellan-dev/castellan/integration/cluster/dns"
	"github.com/castellan-dev/castellan/integration/cluster/host"
	"github.com/castellan-dev/castellan/integration/cluster/proc"
)

// The cluster's fixed names and addresses.
const (
	// NodeName is the name of the only node.
	NodeName = "castellan-node"
	// NodeIP is the node's address, added as a /32 to lo.
	NodeIP = "10.250.13.1"
	// PodCIDR is the pods' address range, on the bridge Bridge.
	PodCIDR    = "10.244.13.0/24"
	podGateway = "10.244.13.1"
	// Bridge is the pod network's Linux bridge.
	Bridge = "cstl13br0"
	// CNINetwork is the CNI network's name.
	CNINetwork = "castellan-cluster"
	// ServiceCIDR is the Services' virtual address range.
	ServiceCIDR = "10.96.0.0/12"
	// APIServiceIP is the ClusterIP of the "kubernetes" Service.
	APIServiceIP = "10.96.0.1"
	// DNSServiceIP is the address the kubelet gives pods as name server.
	DNSServiceIP = "10.96.0.10"
	// ClusterDomain is the cluster's DNS domain.
	ClusterDomain = "cluster.local"
	// AudienceCastellan is an API audience the apiserver accepts besides
	// its issuer (the agent's projected token is for it).
	AudienceCastellan = "castellan-ca"
	// PauseImage is the sandbox image, built by Start.
	PauseImage = "castellan.test/pause:v1"

	readyTimeout = 3 * time.Minute
	stopGrace    = 10 * time.Second
)

// Cluster is a running single-node cluster. Its methods are safe for
// concurrent use.
type Cluster struct {
	t       testing.TB
	bins    proc.Binaries
	paths   paths
	pki     *pki
	url     string
	apiPort int

	kubeletPort    int
	kubeletServing *credential
	admin          *credential
	clients        map[string]*credential // component -> client credential, for kubeconfigs
	restConfig     *rest.Config
	client         kubernetes.Interface

	host *host.State // what Start changed on the host, undone by Stop

	mu    sync.Mutex
	procs []*proc.Process // in start order; stopped in reverse

	stopOnce sync.Once
	stopErr  error
}

// paths are the cluster's files, all under dir.
type paths struct {
	dir                                         string
	containerdRoot, containerdState             string
	containerdSock, containerdOpt               string
	cniConfDir, cniIPAMDir                      string
	kubeletRoot, podLogs, volumePlugins         string
	staticPods, resolvConf, logs, pkiDir, confs string
}

func newPaths(dir string) paths {
	return paths{
		dir:             dir,
		containerdRoot:  filepath.Join(dir, "containerd", "root"),
		containerdState: filepath.Join(dir, "containerd", "state"),
		containerdSock:  filepath.Join(dir, "containerd", "containerd.sock"),
		containerdOpt:   filepath.Join(dir, "containerd", "opt"),
		cniConfDir:      filepath.Join(dir, "cni", "net.d"),
		cniIPAMDir:      filepath.Join(dir, "cni", "ipam"),
		kubeletRoot:     filepath.Join(dir, "kubelet"),
		podLogs:         filepath.Join(dir, "pod-logs"),
		volumePlugins:   filepath.Join(dir, "volume-plugins"),
		staticPods:      filepath.Join(dir, "manifests"),
		resolvConf:      filepath.Join(dir, "resolv.conf"),
		logs:            filepath.Join(dir, "logs"),
		pkiDir:          filepath.Join(dir, "pki"),
		confs:           filepath.Join(dir, "conf"),
	}
}

func (p paths) kubeconfig(name string) string { return filepath.Join(p.confs, name+".kubeconfig") }
func (p paths) log(name string) string        { return filepath.Join(p.logs, name+".log") }

// Start runs a cluster for t and tears it down when t ends. See
// host.Require for when it skips; it fails t if the node is not Ready
// within three minutes.
func Start(t testing.TB) *Cluster {
	t.Helper()
	host.Require(t)
	bins, err := proc.FindBinaries()
	if err != nil {
		t.Fatalf("cluster: %v", err)
	}
	unlock, err := host.Lock(readyTimeout + 5*time.Minute)
	if err != nil {
		t.Fatalf("cluster: %v", err)
	}
	if dirs, err := host.RecoverStale(network()); err != nil {
		unlock()
		t.Fatalf("cluster: undoing the clusters of killed tests (%s): %v", strings.Join(dirs, ", "), err)
	} else if len(dirs) > 0 {
		t.Logf("cluster: undid the clusters of killed tests: %s", strings.Join(dirs, ", "))
	}
	dir, err := os.MkdirTemp("", "cstl-")
	if err != nil {
		unlock()
		t.Fatalf("cluster: %v", err)
	}
	c := &Cluster{t: t, bins: bins, paths: newPaths(dir)}
	t.Cleanup(func() {
		defer unlock()
		if t.Failed() {
			c.logTails()
			c.keepLogs()
		}
		if err := c.Stop(); err != nil {
			t.Errorf("cluster: teardown: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	if err := c.start(ctx); err != nil {
		t.Fatalf("cluster: %v", err)
	}
	return c
}

// start brings the cluster up, in dependency order.
func (c *Cluster) start(ctx context.Context) error {
	h, err := host.Prepare(c.paths.dir, network())
	if err != nil {
		return err
	}
	c.host = h
	for _, d := range []string{c.paths.logs, c.paths.confs, c.paths.staticPods, c.paths.podLogs, c.paths.volumePlugins} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	if err := c.writePKI(); err != nil {
		return fmt.Errorf("certificates: %w", err)
	}
	steps := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"kube-apiserver", c.startAPIServer},
		{"containerd", c.startContainerd},
		{"pause image", c.importPause},
		{"control plane", c.startControllers},
		{"kubelet", c.startKubelet},
		{"kube-proxy", c.startKubeProxy},
		{"cluster DNS", c.startDNS},
		{"node Ready", c.waitNodeReady},
		{"default service account", c.waitDefaultServiceAccount},
	}
	for _, s := range steps {
		begin := time.Now()
		if err := s.fn(ctx); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		c.t.Logf("cluster: %s up in %s", s.name, time.Since(begin).Round(time.Millisecond))
	}
	return nil
}

// writePKI creates the CA and every credential the components use.
func (c *Cluster) writePKI() error {
	p, err := newPKI(c.paths.pkiDir)
	if err != nil {
		return err
	}
	c.pki = p
	c.clients = map[string]*credential{}
	ip := net.ParseIP(NodeIP)
	if _, err := p.serving("apiserver", []string{"kubernetes", "kubernetes.default",
		"kubernetes.default.svc", "kubernetes.default.svc." + ClusterDomain, "localhost"},
		[]net.IP{ip, net.ParseIP(APIServiceIP), net.ParseIP("127.0.0.1")}); err != nil {
		return err
	}
	if c.kubeletServing, err = p.serving("kubelet", []string{NodeName}, []net.IP{ip}); err != nil {
		return err
	}
	if c.admin, err = p.client("admin", "cluster-admin", "system:masters"); err != nil {
		return err
	}
	clients := []struct{ name, cn, group string }{
		{"apiserver-kubelet", "kube-apiserver-kubelet-client", "system:masters"},
		{"kubelet", "system:node:" + NodeName, "system:nodes"},
		{"kube-controller-manager", "system:kube-controller-manager", ""},
		{"kube-scheduler", "system:kube-scheduler", ""},
		{"kube-proxy", "system:kube-proxy", ""},
		{"coredns", dns.User, ""},
	}
	for _, cl := range clients {
		var groups []string
		if cl.group != "" {
			groups = []string{cl.group}
		}
		cred, err := p.client(cl.name+"-client", cl.cn, groups...)
		if err != nil {
			return err
		}
		if cl.name != "apiserver-kubelet" {
			c.clients[cl.name] = cred
		}
	}
	c.clients["admin"] = c.admin
	return nil
}

// add records a started process, so Stop stops it.
func (c *Cluster) add(p *proc.Process) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.procs = append(c.procs, p)
}

// logTails logs the end of every component's log, for a failed test.
func (c *Cluster) logTails() {
	c.mu.Lock()
	procs := append([]*proc.Process(nil), c.procs...)
	c.mu.Unlock()
	for _, p := range procs {
		c.t.Logf("cluster: %s log, errors and tail:\n%s", p.Name, proc.ErrorsAndTail(p.LogFile, 15, 10))
	}
}

// keepLogs moves the components' logs out of the cluster directory (which
// Stop removes) and says where.
func (c *Cluster) keepLogs() {
	kept := c.paths.dir + "-logs"
	if err := os.Rename(c.paths.logs, kept); err != nil {
		c.t.Logf("cluster: keeping the logs: %v", err)
		return
	}
	c.t.Logf("cluster: the components' logs are in %s", kept)
}

// Stop tears the cluster down (see the package comment). It is idempotent;
// Start registers it as a cleanup.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(func() { c.stopErr = c.teardown() })
	return c.stopErr
}

// teardown stops every component (killing the containers before
// containerd stops) and undoes the changes to the host (package host),
// collecting every failure.
func (c *Cluster) teardown() error {
	var errs []error
	c.mu.Lock()
	procs := slices.Clone(c.procs)
	c.mu.Unlock()
	slices.Reverse(procs) // coredns, kube-proxy, kubelet, scheduler, controller-manager, containerd, apiserver
	for _, p := range procs {
		if p.Name == "containerd" {
			if err := host.KillContainers(c.paths.dir, c.runningPIDs()); err != nil {
				errs = append(errs, fmt.Errorf("killing containers: %w", err))
			}
		}
		if err := p.Stop(stopGrace); err != nil {
			errs = append(errs, fmt.Errorf("stopping %s: %w", p.Name, err))
		}
	}
	if c.host == nil { // host.Prepare failed: nothing was changed
		return errors.Join(append(errs, os.RemoveAll(c.paths.dir))...)
	}
	return errors.Join(append(errs, c.host.Undo(c.runningPIDs()))...)
}

// runningPIDs lists the components still running, which Stop stops itself.
func (c *Cluster) runningPIDs() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var pids []int
	for _, p := range c.procs {
		if pid := p.Pid(); pid != 0 {
			pids = append(pids, pid)
		}
	}
	return pids
}

// RemoveAtStop asks Stop to remove a host path outside the cluster
// directory (for example a DaemonSet's hostPath) if it did not exist before
// this call.
func (c *Cluster) RemoveAtStop(path string) {
	if err := c.host.RemoveAtUndo(path); err != nil {
		c.t.Errorf("cluster: saving the host state: %v", err)
	}
}

// Leftovers lists what this cluster left on the host: its processes and
// containers, mounts under its directory, kubepods cgroups, iptables rules
// or chains added since Start, new network interfaces (bridge, veths), the
// node address, changed sysctls, host paths it created, its directory.
// Empty after a clean Stop.
func (c *Cluster) Leftovers() []string { return c.host.Leftovers() }

// network is what the cluster adds to the host's network.
func network() host.Network {
	return host.Network{NodeIP: NodeIP, Bridge: Bridge, CNINetwork: CNINetwork}
}

// Client returns an admin clientset (a client certificate in
// system:masters).
func (c *Cluster) Client() kubernetes.Interface { return c.client }

// RESTConfig returns a copy of the admin client configuration.
func (c *Cluster) RESTConfig() *rest.Config { return rest.CopyConfig(c.restConfig) }

// Kubeconfig returns the path of an admin kubeconfig file.
func (c *Cluster) Kubeconfig() string { return c.paths.kubeconfig("admin") }

// URL returns the apiserver's URL, https://NodeIP:port.
func (c *Cluster) URL() string { return c.url }

// Dir returns the directory that holds all of the cluster's files.
func (c *Cluster) Dir() string { return c.paths.dir }

// ContainerdSocket returns the path of the cluster's containerd socket.
func (c *Cluster) ContainerdSocket() string { return c.paths.containerdSock }

// LogFile returns the path of a component's log ("kube-apiserver",
// "containerd", "kubelet", ...).
func (c *Cluster) LogFile(component string) string { return c.paths.log(component) }

func itoa(n int) string { return strconv.Itoa(n) }
