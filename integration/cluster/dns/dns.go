// Package dns runs the test cluster's DNS (package cluster): CoreDNS
// (kube-coredns, integration/kube/coredns) on the node, answering for the
// cluster domain from the API and forwarding the rest to the host's name
// servers, published as the Service kube-system/kube-dns whose one
// endpoint is CoreDNS's port on the node address (like a host-network DNS
// pod), so manifests use Service names unchanged.
package dns

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/castellan-dev/castellan/integration/cluster/proc"
	"github.com/castellan-dev/castellan/internal/freeport"
)

// User is the user of CoreDNS's client certificate.
const User = "system:castellan-cluster:coredns"

// Config says where CoreDNS runs and what it serves.
type Config struct {
	Binary       string // kube-coredns
	Corefile     string // where to write CoreDNS's configuration
	LogFile      string // CoreDNS's output
	Kubeconfig   string // a kubeconfig of User
	Forward      string // a resolv.conf of the name servers for other names ("": none)
	NodeIP       string // the address CoreDNS binds
	Domain       string // the cluster's DNS domain
	ServiceIP    string // the ClusterIP of kube-dns
	APIServiceIP string // the ClusterIP of the "kubernetes" Service
}

// Server is a running CoreDNS.
type Server struct {
	cfg     Config
	port    int
	Process *proc.Process // the CoreDNS process, for the caller to stop
}

// Start lets User read what CoreDNS watches, writes its configuration and
// starts it on a free port of NodeIP.
func Start(ctx context.Context, client kubernetes.Interface, cfg Config) (*Server, error) {
	port, err := freeport.Port()
	if err != nil {
		return nil, err
	}
	if err := rbac(ctx, client); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, port: port}
	if err := os.WriteFile(cfg.Corefile, []byte(s.corefile()), 0o600); err != nil {
		return nil, err
	}
	if s.Process, err = proc.Start("coredns", cfg.LogFile, cfg.Binary, "-conf", cfg.Corefile); err != nil {
		return nil, err
	}
	return s, nil
}

// WaitResolves returns once CoreDNS resolves the "kubernetes" Service,
// failing early if it exits.
func (s *Server) WaitResolves(ctx context.Context) error {
	resolver := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, net.JoinHostPort(s.cfg.NodeIP, strconv.Itoa(s.port)))
	}}
	return proc.Poll(ctx, 200*time.Millisecond, func() (bool, error) {
		if err := s.Process.Running(); err != nil {
			return false, err
		}
		qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		addrs, err := resolver.LookupHost(qctx, "kubernetes.default.svc."+s.cfg.Domain)
		return err == nil && len(addrs) == 1 && addrs[0] == s.cfg.APIServiceIP, nil
	})
}

// corefile is CoreDNS's configuration.
func (s *Server) corefile() string {
	forward := ""
	if s.cfg.Forward != "" {
		forward = "    forward . " + s.cfg.Forward + "\n"
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
`, s.port, s.cfg.NodeIP, s.cfg.Domain, s.cfg.Kubeconfig, forward)
}

// rbac lets User read what CoreDNS's kubernetes plugin watches.
func rbac(ctx context.Context, client kubernetes.Interface) error {
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "castellan-cluster:coredns"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"services", "endpoints", "pods", "namespaces"}, Verbs: []string{"list", "watch"}},
			{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"list", "watch"}},
		},
	}
	if _, err := client.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		return err
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "castellan-cluster:coredns"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "User", Name: User}},
	}
	_, err := client.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{})
	return err
}

// Publish creates kube-system/kube-dns (no selector) at ServiceIP:53 and
// its EndpointSlice, NodeIP and CoreDNS's port for UDP and TCP.
func (s *Server) Publish(ctx context.Context, client kubernetes.Interface) error {
	port := s.port
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-dns", Namespace: "kube-system", Labels: map[string]string{"k8s-app": "kube-dns"}},
		Spec: corev1.ServiceSpec{
			ClusterIP: s.cfg.ServiceIP,
			Ports: []corev1.ServicePort{
				{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53, TargetPort: intstr.FromInt32(int32(port))},
				{Name: "dns-tcp", Protocol: corev1.ProtocolTCP, Port: 53, TargetPort: intstr.FromInt32(int32(port))},
			},
		},
	}
	if _, err := client.CoreV1().Services("kube-system").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
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
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{s.cfg.NodeIP}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
		Ports: []discoveryv1.EndpointPort{
			{Name: &dns, Protocol: &udp, Port: &p32},
			{Name: &dnsTCP, Protocol: &tcp, Port: &p32},
		},
	}
	_, err := client.DiscoveryV1().EndpointSlices("kube-system").Create(ctx, slice, metav1.CreateOptions{})
	return err
}
