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
// Start needs root and the environment variable CASTELLAN_CLUSTER=1 (the
// cluster changes the host: an address on lo, a bridge, iptables rules,
// cgroups under /kubepods, a few sysctls); without it the test is skipped.
// With CASTELLAN_CLUSTER=1 anything missing fails the test; missing Debian
// packages are installed with apt-get.
//
// The node is NodeName at NodeIP (a /32 on lo, the only address every
// component binds to besides 127.0.0.1). Its pods get addresses from
// PodCIDR on the bridge Bridge; Services from ServiceCIDR. Every file the
// cluster writes is under one temporary directory, except the few paths the
// kubelet, containerd and the CNI plugins hard-code (see hostPaths).
//
// Stop (registered as a cleanup by Start) tears everything down: the
// components, every container and shim of this containerd, the mounts, the
// kubepods cgroups, the bridge, the node address, the iptables rules and
// chains added since Start, the sysctls the kubelet and the bridge plugin
// change, and the hard-coded host paths it created. Leftovers lists what
// would have survived. Only one cluster runs on a host at a time (the fixed
// names above and the /kubepods cgroup): Start waits for a host-wide lock,
// and then removes what a cluster whose test process was killed left.
package cluster

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/castellan-dev/castellan/internal/testroot"
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

	// EnvEnable names the environment variable that must be 1 to run.
	EnvEnable = "CASTELLAN_CLUSTER"

	readyTimeout = 3 * time.Minute
	stopGrace    = 10 * time.Second
)

// Cluster is a running single-node cluster. Its methods are safe for
// concurrent use.
type Cluster struct {
	t       testing.TB
	bins    binaries
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

	host *hostState // what Start changed on the host, undone by Stop

	mu    sync.Mutex
	procs []*process // in start order; stopped in reverse

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

// Require lets a developer's plain `go test` skip the cluster
// tests, which change the host; under `make test` (CASTELLAN_REQUIRE_ROOT
// set, as it sets EnvEnable) a disabled cluster or a missing root fails.
func Require(t testing.TB) {
	t.Helper()
	if os.Getenv(EnvEnable) != "1" {
		if os.Getenv(testroot.EnvRequire) != "" {
			t.Fatalf("cluster: %s is set but %s is not: the real-cluster tests would not run", testroot.EnvRequire, EnvEnable)
		}
		t.Skipf("cluster: set %s=1 (as root) to run a real single-node Kubernetes cluster", EnvEnable)
	}
	testroot.Require(t, "run a real kubelet, containerd and iptables")
}

// Start runs a cluster for t and tears it down when t ends. See Require
// for when it skips; it fails t if the node is not Ready within three
// minutes.
func Start(t testing.TB) *Cluster {
	t.Helper()
	Require(t)
	bins, err := findBinaries()
	if err != nil {
		t.Fatalf("cluster: %v", err)
	}
	unlock, err := lockHost(readyTimeout + 5*time.Minute)
	if err != nil {
		t.Fatalf("cluster: %v", err)
	}
	if dirs, err := recoverStale(); err != nil {
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
	host, err := prepareHost(c.paths)
	if err != nil {
		return err
	}
	c.host = host
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
		{"coredns", dnsUser, ""},
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
func (c *Cluster) add(p *process) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.procs = append(c.procs, p)
}

// logTails logs the end of every component's log, for a failed test.
func (c *Cluster) logTails() {
	c.mu.Lock()
	procs := append([]*process(nil), c.procs...)
	c.mu.Unlock()
	for _, p := range procs {
		c.t.Logf("cluster: %s log, errors and tail:\n%s", p.name, errorsAndTail(p.logFile, 15, 10))
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
