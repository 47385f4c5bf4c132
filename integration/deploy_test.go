package integration_test

import (
	"bytes"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/encoding/protojson"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"

	// Every extension a bootstrap in deploy/ names in a typed_config, so
	// that protojson resolves its Any and rejects unknown fields inside it.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
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
		"poddisruptionbudget.policy/castellan-ca", "clusterrole.rbac.authorization.k8s.io/castellan-ca",
		"deployment.apps/productpage-v1", "deployment.apps/ratings-v1",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("dry-run apply output lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "(server dry run)"); n != len(objs) {
		t.Errorf("%d objects accepted in server dry run, want %d:\n%s", n, len(objs), out)
	}
}
