package integration_test

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/encoding/protojson"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"

	// Every extension a bootstrap in deploy/ names in a typed_config, so
	// that protojson resolves its Any and rejects unknown fields inside it.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"

	"github.com/castellan-dev/castellan/integration/kubetest"
)

const (
	deployDir = "../deploy"
	// sdsCertName and sdsRootName are the SDS resource names the agent
	// serves (Istio's): the workload's own certificate and the trust bundle.
	sdsCertName = "default"
	sdsRootName = "ROOTCA"
	// agentSAAudience is the audience of the agent's projected token.
	agentSAAudience = "castellan-ca"
)

// kustomization is the part of a kustomization.yaml these tests read.
type kustomization struct {
	Resources          []string `json:"resources"`
	ConfigMapGenerator []struct {
		Name  string   `json:"name"`
		Files []string `json:"files"`
	} `json:"configMapGenerator"`
}

// envoyBootstrapFiles returns every file under deploy/ that a
// configMapGenerator publishes as an Envoy bootstrap (key envoy.yaml).
func envoyBootstrapFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(deployDir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "kustomization.yaml" {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		var k kustomization
		// Other kustomize fields (labels, namespace...) are not ours to
		// model: read only the fields we need.
		if err := yaml.Unmarshal(b, &k); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		for _, g := range k.ConfigMapGenerator {
			for _, f := range g.Files {
				key, src, ok := strings.Cut(f, "=")
				if !ok {
					key, src = path.Base(f), f
				}
				if key == "envoy.yaml" {
					files = append(files, filepath.Join(filepath.Dir(p), src))
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walking %s: %v", deployDir, err)
	}
	return files
}

// parseBootstrap reads an Envoy bootstrap YAML file strictly: every field,
// including those inside typed_config Any's, must be known to Envoy's API.
func parseBootstrap(t *testing.T, file string) *bootstrapv3.Bootstrap {
	t.Helper()
	y, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return parseBootstrapYAML(t, file, y)
}

// parseBootstrapYAML is parseBootstrap for a bootstrap already in memory
// (e.g. the data of a rendered ConfigMap); file names it in errors.
func parseBootstrapYAML(t *testing.T, file string, y []byte) *bootstrapv3.Bootstrap {
	t.Helper()
	j, err := yaml.YAMLToJSON(y)
	if err != nil {
		t.Fatalf("%s: not YAML: %v", file, err)
	}
	var b bootstrapv3.Bootstrap
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(j, &b); err != nil {
		t.Fatalf("%s: not a strict envoy.config.bootstrap.v3.Bootstrap: %v", file, err)
	}
	if err := b.ValidateAll(); err != nil {
		t.Fatalf("%s: invalid bootstrap: %v", file, err)
	}
	return &b
}

func TestEnvoyBootstrapsParseStrictly(t *testing.T) {
	files := envoyBootstrapFiles(t)
	if len(files) < 4 {
		t.Fatalf("found %d Envoy bootstraps in %s (%v), want one per Bookinfo service", len(files), deployDir, files)
	}
	for _, f := range files {
		b := parseBootstrap(t, f)
		if len(b.GetStaticResources().GetListeners()) == 0 {
			t.Errorf("%s: no listeners", f)
		}
	}
}

func TestEnvoyBootstrapsRejectUnknownFields(t *testing.T) {
	// The strict parse above is only worth something if it fails on a typo,
	// including one nested inside a typed_config.
	files := envoyBootstrapFiles(t)
	if len(files) == 0 {
		t.Fatal("no bootstraps")
	}
	y, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Replace(y, []byte("require_client_certificate"), []byte("require_client_certificat"), 1)
	if bytes.Equal(bad, y) {
		bad = bytes.Replace(y, []byte("stat_prefix"), []byte("stat_prefx"), 1)
	}
	j, err := yaml.YAMLToJSON(bad)
	if err != nil {
		t.Fatal(err)
	}
	var b bootstrapv3.Bootstrap
	if err := (protojson.UnmarshalOptions{}).Unmarshal(j, &b); err == nil {
		t.Fatalf("a misspelt field inside typed_config was accepted")
	}
}

// tlsContexts returns every CommonTlsContext of b's listeners (downstream)
// and clusters (upstream), by a label naming where it was found.
func tlsContexts(t *testing.T, b *bootstrapv3.Bootstrap) map[string]*tlsv3.CommonTlsContext {
	t.Helper()
	out := map[string]*tlsv3.CommonTlsContext{}
	for _, l := range b.GetStaticResources().GetListeners() {
		for i, fc := range l.GetFilterChains() {
			ts := fc.GetTransportSocket()
			if ts == nil {
				continue
			}
			var d tlsv3.DownstreamTlsContext
			if err := ts.GetTypedConfig().UnmarshalTo(&d); err != nil {
				t.Fatalf("listener %s chain %d: transport socket is not a DownstreamTlsContext: %v", l.GetName(), i, err)
			}
			if !d.GetRequireClientCertificate().GetValue() {
				t.Errorf("listener %s: TLS without require_client_certificate is not mutual TLS", l.GetName())
			}
			out["listener "+l.GetName()] = d.GetCommonTlsContext()
		}
	}
	for _, c := range b.GetStaticResources().GetClusters() {
		ts := c.GetTransportSocket()
		if ts == nil {
			continue
		}
		var u tlsv3.UpstreamTlsContext
		if err := ts.GetTypedConfig().UnmarshalTo(&u); err != nil {
			t.Fatalf("cluster %s: transport socket is not an UpstreamTlsContext: %v", c.GetName(), err)
		}
		out["cluster "+c.GetName()] = u.GetCommonTlsContext()
	}
	return out
}

// sdsClusterNames checks that every SDS config of ctx uses a gRPC Envoy
// service, and returns the clusters named.
func sdsClusterNames(t *testing.T, where string, cfgs ...*tlsv3.SdsSecretConfig) []string {
	t.Helper()
	var names []string
	for _, c := range cfgs {
		src := c.GetSdsConfig().GetApiConfigSource()
		if src.GetApiType() != corev3.ApiConfigSource_GRPC || len(src.GetGrpcServices()) != 1 {
			t.Errorf("%s: SDS %q must use one gRPC service, got %v", where, c.GetName(), src)
			continue
		}
		names = append(names, src.GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName())
	}
	return names
}

// pipePath returns the Unix socket path of a static cluster with one endpoint.
func pipePath(t *testing.T, c *clusterv3.Cluster) string {
	t.Helper()
	eps := c.GetLoadAssignment().GetEndpoints()
	if len(eps) != 1 || len(eps[0].GetLbEndpoints()) != 1 {
		t.Fatalf("SDS cluster %s: want exactly one endpoint", c.GetName())
	}
	p := eps[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetPipe().GetPath()
	if p == "" {
		t.Fatalf("SDS cluster %s: endpoint is not a Unix socket (pipe)", c.GetName())
	}
	return p
}

func TestEnvoyBootstrapsUseAgentSDS(t *testing.T) {
	ds := renderedDaemonSet(t)
	socketDir := agentSocketDir(t, ds)
	for _, f := range envoyBootstrapFiles(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			b := parseBootstrap(t, f)
			ctxs := tlsContexts(t, b)
			if len(ctxs) == 0 {
				t.Fatal("no TLS context: the sidecar does no mutual TLS at all")
			}
			clusters := map[string]*clusterv3.Cluster{}
			for _, c := range b.GetStaticResources().GetClusters() {
				clusters[c.GetName()] = c
			}
			for where, c := range ctxs {
				if len(c.GetTlsCertificates()) > 0 || c.GetValidationContext() != nil {
					t.Errorf("%s: inline certificates or validation context; must come from SDS", where)
				}
				certs := c.GetTlsCertificateSdsSecretConfigs()
				if len(certs) != 1 || certs[0].GetName() != sdsCertName {
					t.Errorf("%s: certificate SDS secrets %v, want exactly [%q]", where, secretNames(certs), sdsCertName)
				}
				cvc := c.GetCombinedValidationContext()
				root := cvc.GetValidationContextSdsSecretConfig()
				if root.GetName() != sdsRootName {
					t.Errorf("%s: validation SDS secret %q, want %q", where, root.GetName(), sdsRootName)
				}
				checkSANMatchers(t, where, cvc.GetDefaultValidationContext().GetMatchTypedSubjectAltNames())
				for _, name := range sdsClusterNames(t, where, append(certs, root)...) {
					sc, ok := clusters[name]
					if !ok {
						t.Fatalf("%s: SDS cluster %q not defined", where, name)
					}
					var opts upstreamhttpv3.HttpProtocolOptions
					po := sc.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
					if po.UnmarshalTo(&opts) != nil || opts.GetExplicitHttpConfig().GetHttp2ProtocolOptions() == nil {
						t.Errorf("SDS cluster %s: must use HTTP/2 (gRPC)", name)
					}
					sock := pipePath(t, sc)
					if path.Dir(sock) != socketDir {
						t.Errorf("SDS cluster %s: socket %s is not in the agent's socket directory %s", name, sock, socketDir)
					}
				}
			}
		})
	}
}

func secretNames(cfgs []*tlsv3.SdsSecretConfig) []string {
	var n []string
	for _, c := range cfgs {
		n = append(n, c.GetName())
	}
	return n
}

// checkSANMatchers requires peers to be matched by exact SPIFFE ID URI SANs.
func checkSANMatchers(t *testing.T, where string, ms []*tlsv3.SubjectAltNameMatcher) {
	t.Helper()
	if len(ms) == 0 {
		t.Errorf("%s: no match_typed_subject_alt_names: any workload of the mesh would be accepted as the peer", where)
	}
	for _, m := range ms {
		if m.GetSanType() != tlsv3.SubjectAltNameMatcher_URI {
			t.Errorf("%s: SAN matcher type %v, want URI", where, m.GetSanType())
		}
		exact, ok := m.GetMatcher().GetMatchPattern().(*matcherv3.StringMatcher_Exact)
		if !ok {
			t.Errorf("%s: SAN matcher must be exact, got %v", where, m.GetMatcher())
			continue
		}
		id, err := spiffeid.FromString(exact.Exact)
		if err != nil {
			t.Errorf("%s: SAN matcher %q is not a SPIFFE ID: %v", where, exact.Exact, err)
			continue
		}
		if seg := strings.Split(id.Path(), "/"); len(seg) != 5 || seg[1] != "ns" || seg[3] != "sa" {
			t.Errorf("%s: SAN matcher %s is not a service-account identity /ns/<ns>/sa/<sa>", where, id)
		}
	}
}

// renderDeploy renders deploy/ with kubectl kustomize (skipping when
// kube-testenv, which embeds kubectl, is missing) and decodes every object.
func renderDeploy(t *testing.T) (string, []runtime.Object) {
	t.Helper()
	out := kubetest.Kustomize(t, deployDir)
	var objs []runtime.Object
	for _, doc := range strings.Split(out, "\n---\n") {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode([]byte(doc), nil, nil)
		if err != nil {
			t.Fatalf("rendered object does not decode: %v\n%s", err, doc)
		}
		objs = append(objs, obj)
	}
	return out, objs
}

func renderedDaemonSet(t *testing.T) *appsv1.DaemonSet {
	t.Helper()
	_, objs := renderDeploy(t)
	for _, o := range objs {
		if ds, ok := o.(*appsv1.DaemonSet); ok && ds.Name == "castellan-agent" {
			return ds
		}
	}
	t.Fatal("rendered deploy/ has no castellan-agent DaemonSet")
	return nil
}

// agentSocketDir returns the host path the agent DaemonSet mounts as its
// socket directory (where it mounts it in the container must be the same).
func agentSocketDir(t *testing.T, ds *appsv1.DaemonSet) string {
	t.Helper()
	spec := ds.Spec.Template.Spec
	for _, v := range spec.Volumes {
		if v.HostPath == nil || v.Name != "castellan-socket" {
			continue
		}
		for _, m := range spec.Containers[0].VolumeMounts {
			if m.Name == v.Name {
				if m.MountPath != v.HostPath.Path {
					t.Fatalf("agent mounts socket dir %s at %s; sidecars expect the same path", v.HostPath.Path, m.MountPath)
				}
				return v.HostPath.Path
			}
		}
	}
	t.Fatal("agent DaemonSet has no castellan-socket hostPath volume")
	return ""
}

func TestAgentDaemonSetUsesProjectedTokenForCA(t *testing.T) {
	ds := renderedDaemonSet(t)
	spec := ds.Spec.Template.Spec
	if spec.ServiceAccountName != "castellan-agent" {
		t.Errorf("DaemonSet service account %q, want castellan-agent", spec.ServiceAccountName)
	}
	if !spec.HostPID {
		t.Error("agent needs hostPID to read workloads' /proc/<pid>/cgroup")
	}
	var found bool
	for _, v := range spec.Volumes {
		if v.Projected == nil {
			continue
		}
		for _, s := range v.Projected.Sources {
			if s.ServiceAccountToken != nil && s.ServiceAccountToken.Audience == agentSAAudience {
				found = true
			}
		}
	}
	if !found {
		t.Errorf("no projected service-account token with audience %s", agentSAAudience)
	}
	c := spec.Containers[0]
	if c.ReadinessProbe == nil || c.LivenessProbe == nil {
		t.Error("agent container needs readiness and liveness probes")
	}
}

func TestSidecarsMountAgentSocketDir(t *testing.T) {
	_, objs := renderDeploy(t)
	var ds *appsv1.DaemonSet
	var deployments []*appsv1.Deployment
	for _, o := range objs {
		switch v := o.(type) {
		case *appsv1.DaemonSet:
			ds = v
		case *appsv1.Deployment:
			if v.Namespace == "bookinfo" {
				deployments = append(deployments, v)
			}
		}
	}
	if ds == nil || len(deployments) < 4 {
		t.Fatalf("rendered: DaemonSet %v, %d Bookinfo deployments", ds != nil, len(deployments))
	}
	dir := agentSocketDir(t, ds)
	sas := map[string]bool{}
	for _, d := range deployments {
		spec := d.Spec.Template.Spec
		sas[spec.ServiceAccountName] = true
		var hostVol string
		for _, v := range spec.Volumes {
			if v.HostPath != nil && v.HostPath.Path == dir {
				hostVol = v.Name
			}
		}
		envoy := slices.IndexFunc(spec.Containers, func(c corev1.Container) bool { return c.Name == "envoy" })
		if hostVol == "" || envoy < 0 {
			t.Errorf("deployment %s: no envoy sidecar or no hostPath %s volume", d.Name, dir)
			continue
		}
		mounted := slices.ContainsFunc(spec.Containers[envoy].VolumeMounts, func(m corev1.VolumeMount) bool {
			return m.Name == hostVol && m.MountPath == dir
		})
		if !mounted {
			t.Errorf("deployment %s: envoy does not mount %s at %s", d.Name, hostVol, dir)
		}
	}
	for _, sa := range []string{"bookinfo-productpage", "bookinfo-details", "bookinfo-reviews", "bookinfo-ratings"} {
		if !sas[sa] {
			t.Errorf("no Bookinfo deployment runs as %s", sa)
		}
	}
}

func TestDeployAppliesToRealAPIServer(t *testing.T) {
	rendered, objs := renderDeploy(t)
	env := kubetest.Start(t)
	// Namespaced objects need their namespace to exist for a server-side
	// dry run; create the namespaces for real, then dry-run everything.
	for _, o := range objs {
		if ns, ok := o.(*corev1.Namespace); ok {
			env.CreateNamespace(ns.Name)
		}
	}
	out := env.KubectlWithInput(strings.NewReader(rendered), "apply", "--dry-run=server", "-f", "-")
	for _, want := range []string{
		"deployment.apps/castellan-ca", "daemonset.apps/castellan-agent",
		"persistentvolumeclaim/castellan-ca-data", "clusterrole.rbac.authorization.k8s.io/castellan-ca",
		"deployment.apps/productpage-v1", "deployment.apps/ratings-v1",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("dry-run apply output lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "(server dry run)"); n != len(objs) {
		t.Errorf("%d objects accepted in server dry run, want %d:\n%s", n, len(objs), out)
	}

	// The PostgreSQL variant of the CA, applied in place of deploy/base/ca.
	ha := kubetest.Kustomize(t, filepath.Join(deployDir, "ca-postgres"))
	out = env.KubectlWithInput(strings.NewReader(ha), "apply", "--dry-run=server", "-f", "-")
	for _, want := range []string{"deployment.apps/castellan-ca", "poddisruptionbudget.policy/castellan-ca",
		"service/castellan-ca-headless"} {
		if !strings.Contains(out, want) {
			t.Errorf("deploy/ca-postgres: dry-run apply output lacks %q:\n%s", want, out)
		}
	}
	if n, want := strings.Count(out, "(server dry run)"), strings.Count(ha, "\nkind: "); n != want || n == 0 {
		t.Errorf("deploy/ca-postgres: %d objects accepted in server dry run, want %d:\n%s", n, want, out)
	}
}

// The Bookinfo wiring: which service may call which. productpage is the edge
// (plain HTTP from the ingress); the others accept only the callers named.
var (
	bookinfoCallers = map[string][]string{
		"productpage": nil,
		"details":     {"productpage"},
		"reviews":     {"productpage"},
		"ratings":     {"reviews"},
	}
	// bookinfoCalls maps each caller to the upstream services it must reach
	// through its sidecar, by the env prefix the upstream app reads
	// (productpage.py, LibertyRestEndpoint.java: <X>_HOSTNAME and
	// <X>_SERVICE_PORT, optional SERVICES_DOMAIN).
	bookinfoCalls = map[string][]string{
		"productpage": {"details", "reviews"},
		"reviews":     {"ratings"},
	}
)

const (
	bookinfoAppPort     = 9080 // where every upstream Bookinfo app listens
	bookinfoTrustDomain = "cluster.local"
)

// sidecarListener is one listener of a sidecar bootstrap, reduced to what
// the wiring tests check.
type sidecarListener struct {
	name     string
	addr     string
	port     uint32
	clusters []string // clusters its HTTP routes send to
	mtls     bool
	peers    []string // exact URI SANs a client certificate must carry
}

func bootstrapListeners(t *testing.T, where string, b *bootstrapv3.Bootstrap) []sidecarListener {
	t.Helper()
	var out []sidecarListener
	for _, l := range b.GetStaticResources().GetListeners() {
		sa := l.GetAddress().GetSocketAddress()
		sl := sidecarListener{name: l.GetName(), addr: sa.GetAddress(), port: sa.GetPortValue()}
		if len(l.GetFilterChains()) != 1 || l.GetFilterChains()[0].GetFilterChainMatch() != nil || l.GetDefaultFilterChain() != nil {
			t.Errorf("%s: listener %s: want exactly one filter chain without a match, so that every connection gets the same checks", where, l.GetName())
		}
		for _, fc := range l.GetFilterChains() {
			if ts := fc.GetTransportSocket(); ts != nil {
				var d tlsv3.DownstreamTlsContext
				if err := ts.GetTypedConfig().UnmarshalTo(&d); err != nil {
					t.Fatalf("%s: listener %s: %v", where, l.GetName(), err)
				}
				sl.mtls = d.GetRequireClientCertificate().GetValue()
				for _, m := range d.GetCommonTlsContext().GetCombinedValidationContext().GetDefaultValidationContext().GetMatchTypedSubjectAltNames() {
					if m.GetSanType() == tlsv3.SubjectAltNameMatcher_URI {
						sl.peers = append(sl.peers, m.GetMatcher().GetExact())
					}
				}
			}
			for _, f := range fc.GetFilters() {
				sl.clusters = append(sl.clusters, hcmClusters(t, where, l, f)...)
			}
		}
		out = append(out, sl)
	}
	return out
}

// hcmClusters returns the clusters an HTTP connection manager routes to; any
// other network filter (or an HTTP filter but the router, such as an RBAC
// filter these tests do not model) is an error, so that the peer check
// stays the one in the TLS context.
func hcmClusters(t *testing.T, where string, l *listenerv3.Listener, f *listenerv3.Filter) []string {
	t.Helper()
	var h hcmv3.HttpConnectionManager
	if err := f.GetTypedConfig().UnmarshalTo(&h); err != nil {
		t.Fatalf("%s: listener %s: filter %s is not an HttpConnectionManager: %v", where, l.GetName(), f.GetName(), err)
	}
	for _, hf := range h.GetHttpFilters() {
		if hf.GetName() != "envoy.filters.http.router" {
			t.Errorf("%s: listener %s: unexpected HTTP filter %s", where, l.GetName(), hf.GetName())
		}
	}
	var cs []string
	for _, vh := range h.GetRouteConfig().GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			cs = append(cs, r.GetRoute().GetCluster())
		}
	}
	if len(cs) == 0 {
		t.Errorf("%s: listener %s: no inline route to a cluster", where, l.GetName())
	}
	return cs
}

// clusterTarget returns the single host:port a STATIC/STRICT_DNS cluster
// sends to, and the exact URI SANs it requires of that peer.
func clusterTarget(t *testing.T, c *clusterv3.Cluster) (host string, port uint32, peers []string) {
	t.Helper()
	eps := c.GetLoadAssignment().GetEndpoints()
	if len(eps) != 1 || len(eps[0].GetLbEndpoints()) != 1 {
		t.Fatalf("cluster %s: want exactly one endpoint", c.GetName())
	}
	sa := eps[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
	if ts := c.GetTransportSocket(); ts != nil {
		var u tlsv3.UpstreamTlsContext
		if err := ts.GetTypedConfig().UnmarshalTo(&u); err != nil {
			t.Fatalf("cluster %s: %v", c.GetName(), err)
		}
		for _, m := range u.GetCommonTlsContext().GetCombinedValidationContext().GetDefaultValidationContext().GetMatchTypedSubjectAltNames() {
			peers = append(peers, m.GetMatcher().GetExact())
		}
	}
	return sa.GetAddress(), sa.GetPortValue(), peers
}

func bookinfoSPIFFEID(ns, svc string) string {
	return spiffeid.RequireFromPath(spiffeid.RequireTrustDomainFromString(bookinfoTrustDomain),
		"/ns/"+ns+"/sa/bookinfo-"+svc).String()
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	sort.Strings(c)
	return c
}

// TestBookinfoSidecarWiring checks, on the rendered manifests, that the
// upstream Bookinfo apps, their Envoy sidecars and the Services fit
// together: every upstream address an app is given is a sidecar outbound
// listener that goes, over mTLS, to the right Service and peer identity;
// every Service targets the sidecar's inbound listener, which forwards to
// the app; each inbound listener admits exactly the callers allowed.
func TestBookinfoSidecarWiring(t *testing.T) {
	_, objs := renderDeploy(t)
	configMaps := map[string]*corev1.ConfigMap{}
	var services []*corev1.Service
	var deployments []*appsv1.Deployment
	for _, o := range objs {
		switch v := o.(type) {
		case *corev1.ConfigMap:
			configMaps[v.Namespace+"/"+v.Name] = v
		case *corev1.Service:
			if v.Namespace == "bookinfo" {
				services = append(services, v)
			}
		case *appsv1.Deployment:
			if v.Namespace == "bookinfo" {
				deployments = append(deployments, v)
			}
		}
	}
	if len(deployments) < 6 || len(services) != 4 {
		t.Fatalf("rendered %d Bookinfo deployments and %d services, want 6 (reviews v1-v3) and 4", len(deployments), len(services))
	}

	// inboundPorts[app] = the ports of the inbound listeners of every pod of app.
	inboundPorts := map[string]map[int32]bool{}
	envoyPorts := map[string]map[int32]bool{}
	imageTags := map[string]bool{}
	for _, d := range deployments {
		app := d.Spec.Template.Labels["app"]
		ns := d.Namespace
		spec := d.Spec.Template.Spec
		t.Run(d.Name, func(t *testing.T) {
			if want := "bookinfo-" + app; spec.ServiceAccountName != want {
				t.Errorf("service account %q, want %q", spec.ServiceAccountName, want)
			}
			if spec.EnableServiceLinks == nil || *spec.EnableServiceLinks {
				t.Error("enableServiceLinks must be false: docker-link variables (e.g. RATINGS_SERVICE_PORT) would steer the upstream apps")
			}
			ci := slices.IndexFunc(spec.Containers, func(c corev1.Container) bool { return c.Name == app })
			ei := slices.IndexFunc(spec.Containers, func(c corev1.Container) bool { return c.Name == "envoy" })
			if ci < 0 || ei < 0 {
				t.Fatalf("want containers %q and envoy", app)
			}
			appC, envoyC := spec.Containers[ci], spec.Containers[ei]
			if img, tag, ok := strings.Cut(appC.Image, ":"); !ok || !strings.HasPrefix(img, "docker.io/istio/examples-bookinfo-"+app+"-") {
				t.Errorf("image %s is not an upstream Istio Bookinfo image with a tag", appC.Image)
			} else {
				imageTags[tag] = true
			}
			if !slices.ContainsFunc(appC.Ports, func(p corev1.ContainerPort) bool { return p.ContainerPort == bookinfoAppPort }) {
				t.Errorf("app container does not declare port %d", bookinfoAppPort)
			}

			// The bootstrap, as the pod gets it: the rendered ConfigMap.
			var cmName string
			for _, v := range spec.Volumes {
				if v.ConfigMap != nil && slices.ContainsFunc(envoyC.VolumeMounts, func(m corev1.VolumeMount) bool {
					return m.Name == v.Name && m.MountPath == "/etc/envoy"
				}) {
					cmName = v.ConfigMap.Name
				}
			}
			cm := configMaps[ns+"/"+cmName]
			if cm == nil || cm.Data["envoy.yaml"] == "" {
				t.Fatalf("envoy mounts ConfigMap %q at /etc/envoy, which the rendering lacks (or has no envoy.yaml)", cmName)
			}
			where := "ConfigMap " + cmName
			b := parseBootstrapYAML(t, where, []byte(cm.Data["envoy.yaml"]))
			clusters := map[string]*clusterv3.Cluster{}
			for _, c := range b.GetStaticResources().GetClusters() {
				clusters[c.GetName()] = c
			}
			listeners := bootstrapListeners(t, where, b)

			// Inbound: every non-loopback listener forwards to the app and
			// admits exactly the allowed callers.
			inbound := map[int32]bool{}
			for _, l := range listeners {
				if l.addr == "127.0.0.1" {
					continue
				}
				inbound[int32(l.port)] = true
				if l.port == bookinfoAppPort {
					t.Errorf("inbound listener %s on %d: the app itself listens there", l.name, l.port)
				}
				for _, cn := range l.clusters {
					c, ok := clusters[cn]
					if !ok {
						t.Fatalf("listener %s routes to undefined cluster %s", l.name, cn)
					}
					if host, port, _ := clusterTarget(t, c); host != "127.0.0.1" || port != bookinfoAppPort || c.GetTransportSocket() != nil {
						t.Errorf("inbound listener %s forwards to %s:%d, want plain HTTP to 127.0.0.1:%d", l.name, host, port, bookinfoAppPort)
					}
				}
				var want []string
				for _, caller := range bookinfoCallers[app] {
					want = append(want, bookinfoSPIFFEID(ns, caller))
				}
				switch {
				case len(want) == 0 && (l.mtls || len(l.peers) > 0):
					t.Errorf("inbound listener %s: %s is the edge and takes plain HTTP, got mTLS with peers %v", l.name, app, l.peers)
				case len(want) > 0 && !l.mtls:
					t.Errorf("inbound listener %s: no mutual TLS", l.name)
				case !slices.Equal(sortedCopy(l.peers), sortedCopy(want)):
					t.Errorf("inbound listener %s admits peers %v, want exactly %v", l.name, l.peers, want)
				}
			}
			if len(inbound) == 0 {
				t.Fatal("no inbound listener")
			}
			ports := map[int32]bool{}
			for _, p := range envoyC.Ports {
				ports[p.ContainerPort] = true
				if !inbound[p.ContainerPort] {
					t.Errorf("envoy declares port %d, which is no inbound listener", p.ContainerPort)
				}
			}
			if prev, ok := inboundPorts[app]; ok && !maps.Equal(prev, inbound) {
				t.Errorf("inbound listener ports %v differ from another %s deployment's %v", inbound, app, prev)
			}
			inboundPorts[app], envoyPorts[app] = inbound, ports

			// Outbound: the env the upstream app reads names an outbound
			// listener that reaches the right Service and identity.
			env := map[string]string{}
			for _, e := range appC.Env {
				if e.ValueFrom != nil {
					t.Errorf("env %s: want a literal value", e.Name)
				}
				env[e.Name] = e.Value
			}
			if _, ok := env["SERVICES_DOMAIN"]; ok {
				t.Error("SERVICES_DOMAIN is set: the apps would append it to the 127.0.0.1 upstream hosts")
			}
			for _, upstream := range []string{"details", "reviews", "ratings"} {
				prefix := strings.ToUpper(upstream)
				host, hasHost := env[prefix+"_HOSTNAME"]
				port, hasPort := env[prefix+"_SERVICE_PORT"]
				calls := slices.Contains(bookinfoCalls[app], upstream)
				if !hasHost && !hasPort {
					if calls {
						t.Errorf("%s calls %s but sets neither %s_HOSTNAME nor %s_SERVICE_PORT", app, upstream, prefix, prefix)
					}
					continue
				}
				if !calls {
					t.Errorf("%s may not call %s, yet sets %s_*", app, upstream, prefix)
				}
				if host != "127.0.0.1" || !hasPort {
					t.Errorf("%s_HOSTNAME=%q %s_SERVICE_PORT=%q: want 127.0.0.1 and a sidecar outbound port", prefix, host, prefix, port)
					continue
				}
				p, err := strconv.Atoi(port)
				if err != nil {
					t.Errorf("%s_SERVICE_PORT=%q: %v", prefix, port, err)
					continue
				}
				li := slices.IndexFunc(listeners, func(l sidecarListener) bool { return l.addr == "127.0.0.1" && int(l.port) == p })
				if li < 0 {
					t.Errorf("%s_SERVICE_PORT=%d: the sidecar has no listener on 127.0.0.1:%d", prefix, p, p)
					continue
				}
				l := listeners[li]
				for _, cn := range l.clusters {
					c, ok := clusters[cn]
					if !ok {
						t.Fatalf("listener %s routes to undefined cluster %s", l.name, cn)
					}
					h, hp, peers := clusterTarget(t, c)
					if wantHost := upstream + "." + ns + ".svc.cluster.local"; h != wantHost || hp != bookinfoAppPort {
						t.Errorf("listener %s -> cluster %s -> %s:%d, want %s:%d", l.name, cn, h, hp, wantHost, bookinfoAppPort)
					}
					if want := []string{bookinfoSPIFFEID(ns, upstream)}; c.GetTransportSocket() == nil || !slices.Equal(peers, want) {
						t.Errorf("cluster %s: peer identities %v, want mTLS to exactly %v", cn, peers, want)
					}
				}
			}
		})
	}
	if len(imageTags) != 1 {
		t.Errorf("Bookinfo images use tags %v, want one consistent release", imageTags)
	}

	for _, s := range services {
		app := s.Spec.Selector["app"]
		if inboundPorts[app] == nil {
			t.Errorf("Service %s selects app=%q, which no Bookinfo deployment runs", s.Name, app)
			continue
		}
		for _, p := range s.Spec.Ports {
			if p.Port != bookinfoAppPort {
				t.Errorf("Service %s port %d, want %d as upstream", s.Name, p.Port, bookinfoAppPort)
			}
			if p.TargetPort.Type != intstr.Int {
				t.Errorf("Service %s: targetPort %s: want the number of the sidecar's inbound listener", s.Name, p.TargetPort.String())
				continue
			}
			tp := int32(p.TargetPort.IntValue())
			if !inboundPorts[app][tp] || !envoyPorts[app][tp] {
				t.Errorf("Service %s targets port %d, which is not an inbound listener declared by the %s sidecar", s.Name, tp, app)
			}
		}
	}
}
