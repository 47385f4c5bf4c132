package cluster

import (
	"context"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/castellan-dev/castellan/integration/cluster/dns"
	"github.com/castellan-dev/castellan/integration/cluster/proc"
	"github.com/castellan-dev/castellan/internal/freeport"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// startAPIServer runs etcd and kube-apiserver on NodeIP and waits for /readyz.
func (c *Cluster) startAPIServer(ctx context.Context) error {
	port, err := freeport.Port()
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
	comp, err := proc.Start("kube-apiserver", c.paths.log("kube-apiserver"), c.bins.Testenv, args...)
	if err != nil {
		return err
	}
	c.add(comp)
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
	return c.waitReadyz(ctx, comp)
}

// waitReadyz polls the apiserver's /readyz until it answers 200.
func (c *Cluster) waitReadyz(ctx context.Context, comp *proc.Process) error {
	rt, err := rest.TransportFor(c.restConfig)
	if err != nil {
		return err
	}
	hc := &http.Client{Transport: rt, Timeout: 5 * time.Second}
	defer hc.CloseIdleConnections()
	return proc.Poll(ctx, 200*time.Millisecond, func() (bool, error) {
		if err := comp.Running(); err != nil {
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
	comp, err := proc.Start("containerd", c.paths.log("containerd"), c.bins.Containerd, "--config", cfg)
	if err != nil {
		return err
	}
	c.add(comp)
	return proc.Poll(ctx, 200*time.Millisecond, func() (bool, error) {
		if err := comp.Running(); err != nil {
			return false, err
		}
		_, err := c.ctr(10*time.Second, "version")
		return err == nil, nil
	})
}

// ctr runs containerd's CLI against this cluster's containerd, namespace k8s.io.
func (c *Cluster) ctr(timeout time.Duration, args ...string) (string, error) {
	return proc.Run(timeout, c.bins.Ctr, append([]string{"-a", c.paths.containerdSock, "-n", "k8s.io"}, args...)...)
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
	comp, err := proc.Start("kube-controller-manager", c.paths.log("kube-controller-manager"), c.bins.Node, kcm...)
	if err != nil {
		return err
	}
	c.add(comp)
	sched := []string{
		"kube-scheduler",
		"--kubeconfig=" + c.paths.kubeconfig("kube-scheduler"),
		"--authentication-kubeconfig=" + c.paths.kubeconfig("kube-scheduler"),
		"--authorization-kubeconfig=" + c.paths.kubeconfig("kube-scheduler"),
		"--secure-port=0",
		"--leader-elect=false",
	}
	comp, err = proc.Start("kube-scheduler", c.paths.log("kube-scheduler"), c.bins.Node, sched...)
	if err != nil {
		return err
	}
	c.add(comp)
	return nil
}

// startKubelet writes the kubelet's configuration and starts it.
func (c *Cluster) startKubelet(context.Context) error {
	port, err := freeport.Port()
	if err != nil {
		return err
	}
	c.kubeletPort = port
	cfg := filepath.Join(c.paths.confs, "kubelet.yaml")
	if err := writeFile(cfg, c.kubeletConfig()); err != nil {
		return err
	}
	comp, err := proc.Start("kubelet", c.paths.log("kubelet"), c.bins.Node, "kubelet",
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
	c.add(comp)
	return nil
}

// startKubeProxy writes kube-proxy's configuration and starts it.
func (c *Cluster) startKubeProxy(context.Context) error {
	cfg := filepath.Join(c.paths.confs, "kube-proxy.yaml")
	if err := writeFile(cfg, c.kubeProxyConfig()); err != nil {
		return err
	}
	comp, err := proc.Start("kube-proxy", c.paths.log("kube-proxy"), c.bins.Node, "kube-proxy", "--config="+cfg)
	if err != nil {
		return err
	}
	c.add(comp)
	return nil
}

// waitNodeReady waits until the node reports Ready, failing early if a
// component exits.
func (c *Cluster) waitNodeReady(ctx context.Context) error {
	return proc.Poll(ctx, 500*time.Millisecond, func() (bool, error) {
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
	return proc.Poll(ctx, 200*time.Millisecond, func() (bool, error) {
		_, err := c.client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, c.componentsRunning()
		}
		return err == nil, nil
	})
}

// startDNS runs the cluster DNS (package dns) on the node, serving
// ClusterDomain behind the Service kube-system/kube-dns at DNSServiceIP,
// and returns once it resolves the "kubernetes" Service.
func (c *Cluster) startDNS(ctx context.Context) error {
	forward := ""
	if strings.Contains(hostResolvConf(), "nameserver") {
		forward = c.paths.resolvConf
	}
	s, err := dns.Start(ctx, c.client, dns.Config{
		Binary:       c.bins.CoreDNS,
		Corefile:     filepath.Join(c.paths.confs, "Corefile"),
		LogFile:      c.paths.log("coredns"),
		Kubeconfig:   c.paths.kubeconfig("coredns"),
		Forward:      forward,
		NodeIP:       NodeIP,
		Domain:       ClusterDomain,
		ServiceIP:    DNSServiceIP,
		APIServiceIP: APIServiceIP,
	})
	if err != nil {
		return err
	}
	c.add(s.Process)
	if err := s.Publish(ctx, c.client); err != nil {
		return err
	}
	return s.WaitResolves(ctx)
}

// componentsRunning reports the first component that has exited.
func (c *Cluster) componentsRunning() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.procs {
		if err := p.Running(); err != nil {
			return err
		}
	}
	return nil
}
