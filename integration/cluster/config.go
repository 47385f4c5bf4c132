package cluster

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// writeFile writes content to path (mode 0600), creating parent directories.
func writeFile(path, content string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(content), 0o600)
}

// containerdConfig is containerd's configuration (version 2): every path
// under the cluster directory, the CRI plugin set up as REAL-CLUSTER.md
// found to work on a cgroup v1 VM without CAP_SYS_RESOURCE.
func (c *Cluster) containerdConfig() string {
	d := c.paths
	return fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = [
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.devmapper",
]

[grpc]
  address = %q

[ttrpc]
  address = %q

[plugins."io.containerd.internal.v1.opt"]
  path = %q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_apparmor = true
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %q
`, d.containerdRoot, d.containerdState, d.containerdSock, d.containerdSock+".ttrpc",
		d.containerdOpt, PauseImage, d.cniConfDir)
}

// cniConfig is the pod network: a bridge of the cluster's own name with
// host-local addresses from PodCIDR (state in the cluster directory) and
// portmap for hostPorts.
func (c *Cluster) cniConfig() string {
	return fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": %q,
  "plugins": [
    {
      "type": "bridge",
      "bridge": %q,
      "isGateway": true,
      "hairpinMode": true,
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "dataDir": %q,
        "ranges": [[{"subnet": %q, "gateway": %q}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`, CNINetwork, Bridge, c.paths.cniIPAMDir, PodCIDR, podGateway)
}

// kubeletConfig is the KubeletConfiguration: cgroupfs, the cluster's
// containerd, x509 + webhook authentication, webhook authorization, every
// directory that can be moved into the cluster directory.
func (c *Cluster) kubeletConfig() string {
	d := c.paths
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %s
port: %d
healthzPort: 0
readOnlyPort: 0
cgroupDriver: cgroupfs
failSwapOn: false
failCgroupV1: false
containerRuntimeEndpoint: unix://%s
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %s}
authorization:
  mode: Webhook
tlsCertFile: %s
tlsPrivateKeyFile: %s
clusterDomain: %s
clusterDNS: [%s]
resolvConf: %s
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%%
  imagefs.available: 1%%
makeIPTablesUtilChains: false
podLogsDir: %s
volumePluginDir: %s
staticPodPath: %s
registerNode: true
serializeImagePulls: false
syncFrequency: 10s
fileCheckFrequency: 5s
`, NodeIP, c.kubeletPort, d.containerdSock, c.pki.caFile, c.kubeletServing.certFile,
		c.kubeletServing.keyFile, ClusterDomain, DNSServiceIP, d.resolvConf, d.podLogs,
		d.volumePlugins, d.staticPods)
}

// kubeProxyConfig is kube-proxy's configuration: iptables mode, node ports
// only on the node address, no changes to the host's conntrack sysctls.
func (c *Cluster) kubeProxyConfig() string {
	return fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: %s
mode: iptables
clusterCIDR: %s
hostnameOverride: %s
healthzBindAddress: %s:10256
metricsBindAddress: %s:10249
nodePortAddresses: [%s/32]
iptables:
  localhostNodePorts: false
  syncPeriod: 30s
  minSyncPeriod: 0s
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
`, c.paths.kubeconfig("kube-proxy"), PodCIDR, NodeName, NodeIP, NodeIP, NodeIP)
}

// writeKubeconfig writes a kubeconfig for the given client credential.
func (c *Cluster) writeKubeconfig(name string, cred *credential) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["cluster"] = &clientcmdapi.Cluster{Server: c.url, CertificateAuthority: c.pki.caFile}
	cfg.AuthInfos[name] = &clientcmdapi.AuthInfo{ClientCertificate: cred.certFile, ClientKey: cred.keyFile}
	cfg.Contexts["cluster"] = &clientcmdapi.Context{Cluster: "cluster", AuthInfo: name, Namespace: "default"}
	cfg.CurrentContext = "cluster"
	return clientcmd.WriteToFile(*cfg, c.paths.kubeconfig(name))
}

// hostResolvConf is the resolv.conf pods with dnsPolicy Default get: the
// host's, minus loopback name servers (unreachable from a pod).
func hostResolvConf() string {
	b, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		return ""
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "nameserver" && (strings.HasPrefix(f[1], "127.") || f[1] == "::1") {
			continue
		}
		out = append(out, line)
	}
	return strings.Join(out, "\n")
}
