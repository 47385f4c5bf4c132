package integration_test

import (
	"bufio"
	"errors"
	"io"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/castellan-dev/castellan/integration/kubetest"
)

// The two ways to run the CA on Kubernetes, checked alike whether they come
// from kustomize (deploy/base/ca, deploy/ca-postgres) or from the chart
// (datastore.type bbolt or postgres): bbolt keeps the state on a
// PersistentVolumeClaim with exactly one replica; postgres keeps nothing in
// the pod, and every file the server reads (DSN, log key, CA) comes from a
// Secret. In neither does any state sit on an emptyDir.

const (
	// maxScratch bounds the postgres variant's scratch emptyDir (admin
	// socket and bundle.pem): anything bigger would invite state onto it.
	maxScratch = "16Mi"
)

// caVariant is what a rendered CA variant must be.
type caVariant struct {
	postgres bool
	replicas int32
}

// rendered is one render of the CA and agent objects, by kind.
type rendered struct {
	deployments map[string]*appsv1.Deployment
	daemonSets  map[string]*appsv1.DaemonSet
	services    map[string]*corev1.Service
	pvcs        map[string]*corev1.PersistentVolumeClaim
	pdbs        map[string]*policyv1.PodDisruptionBudget
}

// decodeTyped decodes a multi-document YAML stream (kustomize or helm
// output) into typed objects, skipping documents without an object.
func decodeTyped(t *testing.T, stream string) rendered {
	t.Helper()
	r := rendered{map[string]*appsv1.Deployment{}, map[string]*appsv1.DaemonSet{},
		map[string]*corev1.Service{}, map[string]*corev1.PersistentVolumeClaim{},
		map[string]*policyv1.PodDisruptionBudget{}}
	rd := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(stream)))
	for {
		doc, err := rd.Read()
		if errors.Is(err, io.EOF) {
			return r
		}
		if err != nil {
			t.Fatalf("reading manifests: %v", err)
		}
		if !strings.Contains(string(doc), "kind:") {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("rendered object does not decode: %v\n%s", err, doc)
		}
		r.add(obj)
	}
}

func (r rendered) add(obj runtime.Object) {
	switch o := obj.(type) {
	case *appsv1.Deployment:
		r.deployments[o.Name] = o
	case *appsv1.DaemonSet:
		r.daemonSets[o.Name] = o
	case *corev1.Service:
		r.services[o.Name] = o
	case *corev1.PersistentVolumeClaim:
		r.pvcs[o.Name] = o
	case *policyv1.PodDisruptionBudget:
		r.pdbs[o.Name] = o
	}
}

// flagValues returns the values of --name=value arguments, in order.
func flagValues(args []string, name string) []string {
	var out []string
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			out = append(out, v)
		}
	}
	return out
}

// mountFor returns the volume mounted at the longest mount path that holds
// file, and that mount.
func mountFor(spec corev1.PodSpec, c corev1.Container, file string) (*corev1.Volume, *corev1.VolumeMount) {
	var best *corev1.VolumeMount
	for i, m := range c.VolumeMounts {
		if rel, err := filepath.Rel(m.MountPath, file); err == nil && !strings.HasPrefix(rel, "..") && rel != "." &&
			(best == nil || len(m.MountPath) > len(best.MountPath)) {
			best = &c.VolumeMounts[i]
		}
	}
	if best == nil {
		return nil, nil
	}
	for i, v := range spec.Volumes {
		if v.Name == best.Name {
			return &spec.Volumes[i], best
		}
	}
	return nil, best
}

// checkCAVariant checks the CA Deployment, its volumes and companions in r
// against want; where names the render in errors.
func checkCAVariant(t *testing.T, where string, r rendered, want caVariant) {
	t.Helper()
	d := r.deployments["castellan-ca"]
	if d == nil {
		t.Fatalf("%s: no Deployment castellan-ca", where)
	}
	switch {
	case d.Spec.Replicas == nil:
		t.Errorf("%s: replicas unset (1), want %d", where, want.replicas)
	case *d.Spec.Replicas != want.replicas:
		t.Errorf("%s: %d replicas, want %d", where, *d.Spec.Replicas, want.replicas)
	}
	spec := d.Spec.Template.Spec
	c := spec.Containers[0]
	checkSecretFiles(t, where, spec, c, want)
	checkNoStateOnEmptyDir(t, where, spec, c, want)
	if p := c.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/readyz" {
		t.Errorf("%s: the CA's readiness probe is %+v, want GET /readyz (a replica without its database must drop out)", where, p)
	}
	checkAntiAffinity(t, where, spec, d.Spec.Template.Labels)
	if want.postgres {
		checkPostgresCompanions(t, where, r, d)
	} else {
		checkBboltCompanions(t, where, r, d)
	}
	checkAgentUsesHeadless(t, where, r)
}

// checkSecretFiles checks that the CA's key material and, with postgres,
// its DSN and log key come from read-only Secret volumes no one else may
// read (defaultMode 0400), and that the pod's fsGroup is the server's group
// so that the non-root server can read them.
func checkSecretFiles(t *testing.T, where string, spec corev1.PodSpec, c corev1.Container, want caVariant) {
	t.Helper()
	files := map[string]string{"root-cert": "cacerts", "intermediate-cert": "cacerts", "intermediate-key": "cacerts"}
	if want.postgres {
		files["datastore-file"] = "castellan-datastore"
		files["ledger-key-file"] = "castellan-ledger-key"
	} else {
		for _, f := range []string{"datastore", "datastore-file", "ledger-key-file"} {
			if v := flagValues(c.Args, f); len(v) > 0 {
				t.Errorf("%s: the bbolt CA is given --%s=%v", where, f, v)
			}
		}
	}
	if v := flagValues(c.Args, "datastore"); len(v) > 0 {
		t.Errorf("%s: --datastore=%v puts the DSN (and its password) on the command line; use --datastore-file", where, v)
	}
	for flag, secret := range files {
		vals := flagValues(c.Args, flag)
		if len(vals) != 1 {
			t.Errorf("%s: --%s given %d times (%v), want once", where, flag, len(vals), vals)
			continue
		}
		v, m := mountFor(spec, c, vals[0])
		switch {
		case v == nil || v.Secret == nil:
			t.Errorf("%s: --%s=%s is not on a Secret volume (%s)", where, flag, vals[0], describeVolume(v))
		case v.Secret.SecretName != secret:
			t.Errorf("%s: --%s=%s comes from Secret %s, want %s", where, flag, vals[0], v.Secret.SecretName, secret)
		case v.Secret.DefaultMode == nil || *v.Secret.DefaultMode != 0o400:
			t.Errorf("%s: Secret volume %s has defaultMode %s, want 0400 (the server refuses files others may read)", where, v.Name, fileMode(v.Secret.DefaultMode))
		case !m.ReadOnly:
			t.Errorf("%s: Secret volume %s is mounted read-write", where, v.Name)
		case !secretHasFile(v.Secret, path.Base(vals[0])):
			t.Errorf("%s: --%s=%s names no key of Secret %s (items %+v)", where, flag, vals[0], secret, v.Secret.Items)
		}
	}
	sc := spec.SecurityContext
	if sc == nil || sc.RunAsUser == nil || *sc.RunAsUser == 0 || sc.FSGroup == nil || sc.RunAsGroup == nil || *sc.FSGroup != *sc.RunAsGroup {
		t.Errorf("%s: pod securityContext %+v: want a non-root user with fsGroup = its group, so the 0400 Secret files are readable by the server and no one else", where, sc)
	}
}

// secretHasFile reports whether a Secret volume projects a file named
// name: through its items, or (with no items) as a key we cannot see here.
func secretHasFile(s *corev1.SecretVolumeSource, name string) bool {
	if len(s.Items) == 0 {
		return true
	}
	for _, it := range s.Items {
		if it.Path == name {
			return true
		}
	}
	return false
}

// checkNoStateOnEmptyDir checks where --data-dir lives: on the claim
// castellan-ca-data with bbolt (and no emptyDir in the pod at all); with
// postgres, on a small in-memory emptyDir, which may hold only what is remade
// at start because the datastore, the log key and the CA come from
// elsewhere (checked by checkSecretFiles).
func checkNoStateOnEmptyDir(t *testing.T, where string, spec corev1.PodSpec, c corev1.Container, want caVariant) {
	t.Helper()
	dirs := flagValues(c.Args, "data-dir")
	if len(dirs) != 1 {
		t.Fatalf("%s: --data-dir given %d times, want once", where, len(dirs))
	}
	v, _ := mountFor(spec, c, dirs[0])
	if v == nil {
		t.Fatalf("%s: --data-dir=%s is on the image's read-only root file system", where, dirs[0])
	}
	var emptyDirs []string
	for _, vol := range spec.Volumes {
		if vol.EmptyDir != nil {
			emptyDirs = append(emptyDirs, vol.Name)
		}
	}
	if !want.postgres {
		if v.PersistentVolumeClaim == nil || v.PersistentVolumeClaim.ClaimName != "castellan-ca-data" {
			t.Errorf("%s: the bbolt --data-dir=%s is on %s, want the claim castellan-ca-data", where, dirs[0], describeVolume(v))
		}
		if len(emptyDirs) > 0 {
			t.Errorf("%s: the bbolt CA has emptyDir volumes %v", where, emptyDirs)
		}
		return
	}
	for _, vol := range spec.Volumes {
		if vol.PersistentVolumeClaim != nil {
			t.Errorf("%s: the postgres CA mounts the claim %s: its state belongs in the database", where, vol.PersistentVolumeClaim.ClaimName)
		}
	}
	if len(emptyDirs) != 1 || v.EmptyDir == nil {
		t.Fatalf("%s: emptyDirs %v, --data-dir on %s: want exactly one emptyDir, the scratch --data-dir", where, emptyDirs, describeVolume(v))
	}
	max := resource.MustParse(maxScratch)
	if v.EmptyDir.Medium != corev1.StorageMediumMemory || v.EmptyDir.SizeLimit == nil || v.EmptyDir.SizeLimit.Cmp(max) > 0 {
		t.Errorf("%s: scratch emptyDir %s is %+v, want medium Memory with a sizeLimit of at most %s", where, v.Name, v.EmptyDir, maxScratch)
	}
}

// checkAntiAffinity checks that the scheduler is asked to spread the CA's
// pods over nodes (preferred, so a one-node cluster still runs them all).
func checkAntiAffinity(t *testing.T, where string, spec corev1.PodSpec, podLabels map[string]string) {
	t.Helper()
	if spec.Affinity == nil || spec.Affinity.PodAntiAffinity == nil {
		t.Errorf("%s: the CA has no pod anti-affinity", where)
		return
	}
	for _, term := range spec.Affinity.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
		sel := term.PodAffinityTerm.LabelSelector
		if term.PodAffinityTerm.TopologyKey == "kubernetes.io/hostname" && sel != nil &&
			labels.SelectorFromSet(sel.MatchLabels).Matches(labels.Set(podLabels)) {
			return
		}
	}
	t.Errorf("%s: no preferred anti-affinity over kubernetes.io/hostname for the CA's own pods", where)
}

func checkBboltCompanions(t *testing.T, where string, r rendered, d *appsv1.Deployment) {
	t.Helper()
	if d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Errorf("%s: bbolt CA strategy %q, want Recreate (the old pod must let go of the file first)", where, d.Spec.Strategy.Type)
	}
	if r.pvcs["castellan-ca-data"] == nil {
		t.Errorf("%s: no PersistentVolumeClaim castellan-ca-data", where)
	}
	if len(r.pdbs) > 0 {
		t.Errorf("%s: a PodDisruptionBudget for a single replica protects nothing", where)
	}
}

func checkPostgresCompanions(t *testing.T, where string, r rendered, d *appsv1.Deployment) {
	t.Helper()
	if d.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType {
		t.Errorf("%s: postgres CA strategy %q, want RollingUpdate", where, d.Spec.Strategy.Type)
	}
	if len(r.pvcs) > 0 {
		t.Errorf("%s: the postgres variant creates claims %v", where, keys(r.pvcs))
	}
	pdb := r.pdbs["castellan-ca"]
	switch {
	case d.Spec.Replicas != nil && *d.Spec.Replicas == 1:
		if len(r.pdbs) > 0 {
			t.Errorf("%s: a PodDisruptionBudget for a single replica protects nothing", where)
		}
	case pdb == nil:
		t.Errorf("%s: no PodDisruptionBudget castellan-ca", where)
	case pdb.Spec.Selector == nil || !labels.SelectorFromSet(pdb.Spec.Selector.MatchLabels).Matches(labels.Set(d.Spec.Template.Labels)):
		t.Errorf("%s: the PodDisruptionBudget does not select the CA's pods", where)
	case pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1:
		t.Errorf("%s: PodDisruptionBudget maxUnavailable %v, want 1", where, pdb.Spec.MaxUnavailable)
	}
}

// checkAgentUsesHeadless checks that the agents reach the CA through the
// headless Service, which lists one address per ready CA pod, on its gRPC
// port, with a dns:/// target the agent balances over.
func checkAgentUsesHeadless(t *testing.T, where string, r rendered) {
	t.Helper()
	svc := r.services["castellan-ca-headless"]
	d := r.deployments["castellan-ca"]
	if svc == nil {
		t.Fatalf("%s: no Service castellan-ca-headless", where)
	}
	if svc.Spec.ClusterIP != corev1.ClusterIPNone || svc.Spec.PublishNotReadyAddresses {
		t.Errorf("%s: castellan-ca-headless has clusterIP %q, publishNotReadyAddresses %v; want None, false (only ready replicas)",
			where, svc.Spec.ClusterIP, svc.Spec.PublishNotReadyAddresses)
	}
	if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("%s: castellan-ca-headless does not select the CA's pods", where)
	}
	ds := r.daemonSets["castellan-agent"]
	if ds == nil {
		t.Fatalf("%s: no DaemonSet castellan-agent", where)
	}
	addrs := flagValues(ds.Spec.Template.Spec.Containers[0].Args, "server-address")
	want := []string{"dns:///castellan-ca-headless." + svc.Namespace + ".svc:" + grpcPort(t, where, svc, d)}
	if strings.Join(addrs, " ") != strings.Join(want, " ") {
		t.Errorf("%s: agent --server-address %v, want %v", where, addrs, want)
	}
}

// grpcPort returns the headless Service's port whose target is the CA's
// grpc container port.
func grpcPort(t *testing.T, where string, svc *corev1.Service, d *appsv1.Deployment) string {
	t.Helper()
	var cport int32
	for _, p := range d.Spec.Template.Spec.Containers[0].Ports {
		if p.Name == "grpc" {
			cport = p.ContainerPort
		}
	}
	for _, p := range svc.Spec.Ports {
		if p.TargetPort.String() == "grpc" || p.TargetPort.IntValue() == int(cport) {
			if svc.Spec.ClusterIP == corev1.ClusterIPNone && p.Port != cport {
				// A headless Service resolves to pod IPs: clients use the
				// container port, whatever the Service says.
				t.Errorf("%s: headless port %d targets container port %d; clients will dial %d", where, p.Port, cport, p.Port)
			}
			return strconv.Itoa(int(p.Port))
		}
	}
	t.Fatalf("%s: castellan-ca-headless has no port for the CA's grpc port", where)
	return ""
}

// fileMode renders a Secret's defaultMode in octal.
func fileMode(m *int32) string {
	if m == nil {
		return "unset (0644)"
	}
	return "0" + strconv.FormatInt(int64(*m), 8)
}

// describeVolume names a volume and its kind of source.
func describeVolume(v *corev1.Volume) string {
	switch {
	case v == nil:
		return "no volume"
	case v.PersistentVolumeClaim != nil:
		return "volume " + v.Name + " (claim " + v.PersistentVolumeClaim.ClaimName + ")"
	case v.EmptyDir != nil:
		return "volume " + v.Name + " (emptyDir)"
	case v.Secret != nil:
		return "volume " + v.Name + " (Secret " + v.Secret.SecretName + ")"
	}
	return "volume " + v.Name
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// kustomizeCA renders a CA kustomization with the agent base.
func kustomizeCA(t *testing.T, caDir string) string {
	t.Helper()
	return kubetest.Kustomize(t, filepath.Join(deployDir, caDir)) + "\n---\n" +
		kubetest.Kustomize(t, filepath.Join(deployDir, "base", "agent"))
}

func TestDeployCAVariants(t *testing.T) {
	for _, tc := range []struct {
		dir  string
		want caVariant
	}{
		{"base/ca", caVariant{postgres: false, replicas: 1}},
		{"ca-postgres", caVariant{postgres: true, replicas: 3}},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			checkCAVariant(t, "deploy/"+tc.dir, decodeTyped(t, kustomizeCA(t, tc.dir)), tc.want)
		})
	}
}

func TestHelmChartDatastores(t *testing.T) {
	helm := helmTool.path(t)
	for _, tc := range []struct {
		name string
		args []string
		want caVariant
	}{
		{"bbolt", nil, caVariant{postgres: false, replicas: 1}},
		{"postgres, 3 replicas", helmPostgres3, caVariant{postgres: true, replicas: 3}},
		{"postgres, 1 replica", []string{"--set", "datastore.type=postgres"}, caVariant{postgres: true, replicas: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := helmTemplate(t, helm, tc.args...)
			if r.err != nil {
				t.Fatalf("helm template %v: %v\n%s", tc.args, r.err, r.stderr)
			}
			checkCAVariant(t, "chart "+tc.name, decodeTyped(t, r.stdout), tc.want)
		})
	}
}

// helmPostgres3 are the values of the chart's HA install: three replicas on
// PostgreSQL, with the Secrets' default names.
var helmPostgres3 = []string{"--set", "datastore.type=postgres", "--set", "server.replicas=3"}
