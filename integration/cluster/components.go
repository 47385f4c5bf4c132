package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/castellan-dev/castellan/internal/freeport"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// binaries are the programs the cluster runs.
type binaries struct {
	testenv, node, coredns string // kube-testenv, kube-node, kube-coredns: from the build cache
	containerd             string
	ctr                    string
	ip                     string
	iptables               string
	ip6tables              string
}

// debianPackages maps each host program to the Debian package that has it.
var debianPackages = map[string]string{
	"containerd":              "containerd",
	"ctr":                     "containerd",
	"containerd-shim-runc-v2": "containerd",
	"runc":                    "runc",
	"/usr/lib/cni/bridge":     "containernetworking-plugins",
	"iptables":                "iptables",
	"ip6tables":               "iptables",
	"conntrack":               "conntrack",
	"ip":                      "iproute2",
}

// findBinaries locates every program, installing missing Debian packages
// with apt-get (Start runs as root).
func findBinaries() (binaries, error) {
	var b binaries
	if os.Geteuid() != 0 {
		return b, errors.New("a real cluster needs root (containers, mounts, cgroups, iptables)")
	}
	if err := ensurePackages(); err != nil {
		return b, err
	}
	var err error
	if b.testenv, err = cachedBinary("CASTELLAN_KUBE_TESTENV", "kube-testenv", "integration/kube/testenv/build.sh"); err != nil {
		return b, err
	}
	if b.node, err = cachedBinary("CASTELLAN_KUBE_NODE", "kube-node", "integration/kube/node/build.sh"); err != nil {
		return b, err
	}
	if b.coredns, err = cachedBinary("CASTELLAN_KUBE_COREDNS", "kube-coredns", "integration/kube/coredns/build.sh"); err != nil {
		return b, err
	}
	for _, x := range []struct {
		dst  *string
		name string
	}{{&b.containerd, "containerd"}, {&b.ctr, "ctr"}, {&b.ip, "ip"}, {&b.iptables, "iptables"}, {&b.ip6tables, "ip6tables"}} {
		if *x.dst, err = lookPath(x.name); err != nil {
			return b, err
		}
	}
	return b, nil
}

// ensurePackages installs the Debian packages of missing programs.
func ensurePackages() error {
	var missing []string
	seen := map[string]bool{}
	for prog, pkg := range debianPackages {
		if _, err := lookPath(prog); err == nil || seen[pkg] {
			continue
		}
		seen[pkg] = true
		missing = append(missing, pkg)
	}
	if len(missing) == 0 {
		return nil
	}
	env := []string{"DEBIAN_FRONTEND=noninteractive"}
	if out, err := runEnv(10*time.Minute, env, "apt-get", "update", "-qq"); err != nil {
		return fmt.Errorf("installing %v: %w\n%s", missing, err, out)
	}
	args := append([]string{"install", "-y", "-qq", "--no-install-recommends"}, missing...)
	if out, err := runEnv(10*time.Minute, env, "apt-get", args...); err != nil {
		return fmt.Errorf("installing %v: %w\n%s", missing, err, out)
	}
	return nil
}

// lookPath finds a program in PATH or the sbin directories (which a
// non-login root shell may lack); an absolute name is checked as is.
func lookPath(name string) (string, error) {
	if filepath.IsAbs(name) {
		if _, err := os.Stat(name); err != nil {
			return "", err
		}
		return name, nil
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/local/sbin", "/usr/sbin", "/sbin"} {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in PATH or the sbin directories", name)
}

// cachedBinary returns $env, else ${CASTELLAN_CACHE:-~/.cache/castellan}/bin/name.
func cachedBinary(env, name, script string) (string, error) {
	path := os.Getenv(env)
	if path == "" {
		cache := os.Getenv("CASTELLAN_CACHE")
		if cache == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return "", err
			}
			cache = filepath.Join(home, ".cache", "castellan")
		}
		path = filepath.Join(cache, "bin", name)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode()&0o111 == 0 {
		return "", fmt.Errorf("%s not found at %s: build it with %s (or set %s)", name, path, script, env)
	}
	return path, nil
}

// childEnv is the environment of the components: the test's, with the
// sbin directories on PATH (containerd runs runc, the kubelet iptables).
func childEnv() []string {
	env := os.Environ()
	for i, kv := range env {
		if strings.HasPrefix(kv, "PATH=") {
			env[i] = kv + ":/usr/local/sbin:/usr/sbin:/sbin"
			return env
		}
	}
	return append(env, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
}

// startAPIServer runs etcd and kube-apiserver on NodeIP and waits for /readyz.
func (c *Cluster) startAPIServer(ctx context.Context) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	c.apiPort = port
	c.url = "https://" + net.JoinHostPort(NodeIP, itoa(port))
	p := c.pki
	kc := filepath.Join(p.dir, "apiserver-kubelet-client")
	args := []string{
		"--etcd-data-dir=" + filepath.Join(c.paths.dir, "etcd"), "--",
		"--bind-address=" + NodeIP, "--advertise-address=" + NodeIP,
		"--secure-port=" + itoa(port),
		"--cert-dir=" + filepath.Join(c.paths.dir, "apiserver-certs"),
		"--tls-cert-file=" + filepath.Join(p.dir, "apiserver.crt"),
		"--tls-private-key-file=" + filepath.Join(p.dir, "apiserver.key"),
		"--client-ca-file=" + p.caFile,
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--service-account-issuer=" + c.url,
		"--service-account-key-file=" + p.saPubFile,
		"--service-account-signing-key-file=" + p.saKeyFile,
		"--api-audiences=" + c.url + "," + AudienceCastellan,
		"--service-cluster-ip-range=" + ServiceCIDR,
		"--kubelet-client-certificate=" + kc + ".crt",
		"--kubelet-client-key=" + kc + ".key",
		"--kubelet-certificate-authority=" + p.caFile,
		"--kubelet-preferred-address-types=InternalIP",
		"--allow-privileged=true",
		"--profiling=false",
	}
	proc, err := startProcess("kube-apiserver", c.paths.log("kube-apiserver"), c.bins.testenv, args...)
	if err != nil {
		return err
	}
	c.add(proc)
	c.restConfig = &rest.Config{
		Host:            c.url,
		TLSClientConfig: rest.TLSClientConfig{CAData: p.caPEM, CertData: c.admin.certPEM, KeyData: c.admin.keyPEM},
		QPS:             100, Burst: 200, Timeout: 30 * time.Second,
	}
	for name, cred := range c.clients {
		if err := c.writeKubeconfig(name, cred); err != nil {
			return err
		}
	}
	if c.client, err = kubernetes.NewForConfig(c.restConfig); err != nil {
		return err
	}
	return c.waitReadyz(ctx, proc)
}

// waitReadyz polls the apiserver's /readyz until it answers 200.
func (c *Cluster) waitReadyz(ctx context.Context, proc *process) error {
	rt, err := rest.TransportFor(c.restConfig)
	if err != nil {
		return err
	}
	hc := &http.Client{Transport: rt, Timeout: 5 * time.Second}
	defer hc.CloseIdleConnections()
	return poll(ctx, 200*time.Millisecond, func() (bool, error) {
		if err := proc.running(); err != nil {
			return false, err
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.url+"/readyz", nil)
		resp, err := hc.Do(req)
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
}

// startContainerd writes containerd's configuration and the CNI network,
// starts containerd and waits until it answers.
func (c *Cluster) startContainerd(ctx context.Context) error {
	cfg := filepath.Join(c.paths.confs, "containerd.toml")
	if err := writeFile(cfg, c.containerdConfig()); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(c.paths.cniConfDir, "10-"+CNINetwork+".conflist"), c.cniConfig()); err != nil {
		return err
	}
	if err := writeFile(c.paths.resolvConf, hostResolvConf()); err != nil {
		return err
	}
	proc, err := startProcess("containerd", c.paths.log("containerd"), c.bins.containerd, "--config", cfg)
	if err != nil {
		return err
	}
	c.add(proc)
	return poll(ctx, 200*time.Millisecond, func() (bool, error) {
		if err := proc.running(); err != nil {
			return false, err
		}
		_, err := c.ctr(10*time.Second, "version")
		return err == nil, nil
	})
}

// ctr runs containerd's CLI against this cluster's containerd, namespace k8s.io.
func (c *Cluster) ctr(timeout time.Duration, args ...string) (string, error) {
	return run(timeout, c.bins.ctr, append([]string{"-a", c.paths.containerdSock, "-n", "k8s.io"}, args...)...)
}

// startControllers runs kube-controller-manager and kube-scheduler.
func (c *Cluster) startControllers(context.Context) error {
	p := c.pki
	kcm := []string{
		"kube-controller-manager",
		"--kubeconfig=" + c.paths.kubeconfig("kube-controller-manager"),
		"--secure-port=0",
		"--leader-elect=false",
		"--use-service-account-credentials",
		"--service-account-private-key-file=" + p.saKeyFile,
		"--root-ca-file=" + p.caFile,
		"--service-cluster-ip-range=" + ServiceCIDR,
		"--controllers=*,-bootstrapsigner,-tokencleaner,-csrsigning,-nodeipam",
	}
	proc, err := startProcess("kube-controller-manager", c.paths.log("kube-controller-manager"), c.bins.node, kcm...)
	if err != nil {
		return err
	}
	c.add(proc)
	sched := []string{
		"kube-scheduler",
		"--kubeconfig=" + c.paths.kubeconfig("kube-scheduler"),
		"--authentication-kubeconfig=" + c.paths.kubeconfig("kube-scheduler"),
		"--authorization-kubeconfig=" + c.paths.kubeconfig("kube-scheduler"),
		"--secure-port=0",
		"--leader-elect=false",
	}
	proc, err = startProcess("kube-scheduler", c.paths.log("kube-scheduler"), c.bins.node, sched...)
	if err != nil {
		return err
	}
	c.add(proc)
	return nil
}

// startKubelet writes the kubelet's configuration and starts it.
func (c *Cluster) startKubelet(context.Context) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	c.kubeletPort = port
	cfg := filepath.Join(c.paths.confs, "kubelet.yaml")
	if err := writeFile(cfg, c.kubeletConfig()); err != nil {
		return err
	}
	proc, err := startProcess("kubelet", c.paths.log("kubelet"), c.bins.node, "kubelet",
		"--config="+cfg,
		"--kubeconfig="+c.paths.kubeconfig("kubelet"),
		"--root-dir="+c.paths.kubeletRoot,
		"--cert-dir="+filepath.Join(c.paths.dir, "kubelet-pki"),
		"--hostname-override="+NodeName,
		"--node-ip="+NodeIP,
		"--v=1",
	)
	if err != nil {
		return err
	}
	c.add(proc)
	return nil
}

// startKubeProxy writes kube-proxy's configuration and starts it.
func (c *Cluster) startKubeProxy(context.Context) error {
	cfg := filepath.Join(c.paths.confs, "kube-proxy.yaml")
	if err := writeFile(cfg, c.kubeProxyConfig()); err != nil {
		return err
	}
	proc, err := startProcess("kube-proxy", c.paths.log("kube-proxy"), c.bins.node, "kube-proxy", "--config="+cfg)
	if err != nil {
		return err
	}
	c.add(proc)
	return nil
}

// waitNodeReady waits until the node reports Ready, failing early if a
// component exits.
func (c *Cluster) waitNodeReady(ctx context.Context) error {
	return poll(ctx, 500*time.Millisecond, func() (bool, error) {
		if err := c.componentsRunning(); err != nil {
			return false, err
		}
		node, err := c.client.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, cond := range node.Status.Conditions {
			if cond.Type == corev1.NodeReady {
				return cond.Status == corev1.ConditionTrue, nil
			}
		}
		return false, nil
	})
}

// waitDefaultServiceAccount waits for the controller-manager to create the
// "default" ServiceAccount, without which no pod in "default" is admitted.
func (c *Cluster) waitDefaultServiceAccount(ctx context.Context) error {
	return poll(ctx, 200*time.Millisecond, func() (bool, error) {
		_, err := c.client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, c.componentsRunning()
		}
		return err == nil, nil
	})
}

// componentsRunning reports the first component that has exited.
func (c *Cluster) componentsRunning() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.procs {
		if err := p.running(); err != nil {
			return err
		}
	}
	return nil
}

// poll calls cond every interval until it returns true or an error, or ctx
// ends.
func poll(ctx context.Context, interval time.Duration, cond func() (bool, error)) error {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not ready: %w", ctx.Err())
		case <-tick.C:
		}
	}
}

// freePort asks the kernel for a free TCP port on NodeIP... or loopback
// before NodeIP exists; ports are shared across addresses.
func freePort() (int, error) {
	return freeport.Port()
}

// lockHost takes the host-wide lock that lets one cluster run at a time,
// waiting at most timeout; the returned function releases it.
func lockHost(timeout time.Duration) (func(), error) {
	f, err := os.OpenFile("/run/castellan-cluster.lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(timeout)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("locking /run/castellan-cluster.lock (another cluster test runs?): %w", err)
		}
		time.Sleep(time.Second)
	}
}
