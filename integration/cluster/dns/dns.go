package cluster

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// dnsUser is the user of CoreDNS's client certificate.
const dnsUser = "system:castellan-cluster:coredns"

// startDNS runs CoreDNS (kube-coredns) on the node, answering for
// ClusterDomain from the API and forwarding the rest to the host's name
// servers, and publishes it as the Service kube-system/kube-dns at
// DNSServiceIP:53, whose one endpoint is CoreDNS's port on NodeIP (like a
// host-network DNS pod). It returns once CoreDNS resolves the "kubernetes"
// Service.
func (c *Cluster) startDNS(ctx context.Context) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	if err := c.dnsRBAC(ctx); err != nil {
		return err
	}
	corefile := filepath.Join(c.paths.confs, "Corefile")
	if err := writeFile(corefile, c.corefile(port)); err != nil {
		return err
	}
	proc, err := startProcess("coredns", c.paths.log("coredns"), c.bins.coredns, "-conf", corefile)
	if err != nil {
		return err
	}
	c.add(proc)
	if err := c.dnsService(ctx, port); err != nil {
		return err
	}
	resolver := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, net.JoinHostPort(NodeIP, itoa(port)))
	}}
	return poll(ctx, 200*time.Millisecond, func() (bool, error) {
		if err := proc.running(); err != nil {
			return false, err
		}
		qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		addrs, err := resolver.LookupHost(qctx, "kubernetes.default.svc."+ClusterDomain)
		return err == nil && len(addrs) == 1 && addrs[0] == APIServiceIP, nil
	})
}

// corefile is CoreDNS's configuration.
func (c *Cluster) corefile(port int) string {
	forward := ""
	if strings.Contains(hostResolvConf(), "nameserver") {
		forward = "    forward . " + c.paths.resolvConf + "\n"
	}
	return fmt.Sprintf(`.:%d {
    bind %s
    errors
    kubernetes %s in-addr.arpa ip6.arpa {
        kubeconfig %s cluster
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }
%s    cache 5
    loadbalance
}
`, port, NodeIP, ClusterDomain, c.paths.kubeconfig("coredns"), forward)
}

// dnsRBAC lets CoreDNS's user read what the kubernetes plugin watches.
func (c *Cluster) dnsRBAC(ctx context.Context) error {
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "castellan-cluster:coredns"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"services", "endpoints", "pods", "namespaces"}, Verbs: []string{"list", "watch"}},
			{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"list", "watch"}},
		},
	}
	if _, err := c.client.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		return err
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "castellan-cluster:coredns"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "User", Name: dnsUser}},
	}
	_, err := c.client.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{})
	return err
}

// dnsService creates kube-system/kube-dns (no selector) and its
// EndpointSlice, NodeIP:port for UDP and TCP.
func (c *Cluster) dnsService(ctx context.Context, port int) error {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-dns", Namespace: "kube-system", Labels: map[string]string{"k8s-app": "kube-dns"}},
		Spec: corev1.ServiceSpec{
			ClusterIP: DNSServiceIP,
			Ports: []corev1.ServicePort{
				{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53, TargetPort: intstr.FromInt32(int32(port))},
				{Name: "dns-tcp", Protocol: corev1.ProtocolTCP, Port: 53, TargetPort: intstr.FromInt32(int32(port))},
			},
		},
	}
	if _, err := c.client.CoreV1().Services("kube-system").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return err
	}
	p32, ready := int32(port), true
	udp, tcp := corev1.ProtocolUDP, corev1.ProtocolTCP
	dns, dnsTCP := "dns", "dns-tcp"
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-dns-node", Namespace: "kube-system", Labels: map[string]string{
			discoveryv1.LabelServiceName: "kube-dns",
			discoveryv1.LabelManagedBy:   "castellan-cluster",
		}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{NodeIP}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
		Ports: []discoveryv1.EndpointPort{
			{Name: &dns, Protocol: &udp, Port: &p32},
			{Name: &dnsTCP, Protocol: &tcp, Port: &p32},
		},
	}
	_, err := c.client.DiscoveryV1().EndpointSlices("kube-system").Create(ctx, slice, metav1.CreateOptions{})
	return err
}
