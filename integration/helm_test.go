package integration_test

import (
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/yaml"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/castellan-dev/castellan/integration/kubetest"
	"github.com/castellan-dev/castellan/integration/testbin"
)

var chartDir = filepath.Join(testbin.RepoRoot(), "deploy", "helm", "castellan")

// helmAllOn turns on every optional part of the chart.
var helmAllOn = []string{
	"--set", "monitoring.serviceMonitor.enabled=true",
	"--set", "monitoring.serviceMonitor.labels.release=prometheus",
	"--set", "monitoring.prometheusRule.enabled=true",
	"--set", "server.istio.enabled=true",
	"--set", "server.istio.trustedNodeAccounts[0]=istio-system/ztunnel",
	"--set", "server.adminIDs[0]=spiffe://cluster.local/ns/castellan-system/sa/auditor",
	"--set", "image.pullSecrets[0]=regcred",
	"--set", "datastore.bbolt.storageClassName=fast",
}

// helmTemplate renders the chart as release "castellan" in castellan-system.
func helmTemplate(t *testing.T, helm string, args ...string) toolResult {
	t.Helper()
	return runTool(t, helm, append([]string{"template", "castellan", chartDir, "--namespace", "castellan-system"}, args...)...)
}

// k8sObject is one decoded manifest.
type k8sObject map[string]any

func (o k8sObject) kindName() string {
	md, _ := o["metadata"].(map[string]any)
	return o["kind"].(string) + "/" + md["name"].(string)
}

// decodeManifests decodes a multi-document YAML stream, skipping empty
// documents, into JSON-shaped maps (so numbers compare alike).
func decodeManifests(t *testing.T, stream string) []k8sObject {
	t.Helper()
	dec := yaml.NewYAMLOrJSONDecoder(strings.NewReader(stream), 4096)
	var out []k8sObject
	for {
		var obj map[string]any
		err := dec.Decode(&obj)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("decoding manifests: %v\n%s", err, stream)
		}
		if obj == nil {
			continue
		}
		b, err := json.Marshal(obj)
		if err != nil {
			t.Fatal(err)
		}
		var norm k8sObject
		if err := json.Unmarshal(b, &norm); err != nil {
			t.Fatal(err)
		}
		out = append(out, norm)
	}
}

func TestHelmChartLintsStrict(t *testing.T) {
	helm := helmTool.path(t)
	for name, args := range map[string][]string{"defaults": nil, "everything on": helmAllOn, "postgres, 3 replicas": helmPostgres3,
		"postgres, self-managed CA": helmSelfManaged} {
		t.Run(name, func(t *testing.T) {
			out := mustRunTool(t, helm, append([]string{"lint", "--strict", chartDir}, args...)...)
			if !strings.Contains(out, "0 chart(s) failed") {
				t.Errorf("helm lint --strict:\n%s", out)
			}
		})
	}
}

func TestHelmChartRefusesBadValues(t *testing.T) {
	helm := helmTool.path(t)
	if r := helmTemplate(t, helm); r.err != nil {
		t.Fatalf("the defaults must render: %v\n%s", r.err, r.stderr)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string // in helm's error
	}{
		{"two replicas on bbolt", []string{"--set", "server.replicas=2"}, "at '/datastore/type': value must be 'postgres'"},
		{"zero replicas", []string{"--set", "server.replicas=0"}, "/server/replicas"},
		{"trust domain with capitals and a bang", []string{"--set", "trustDomain=Cluster.Local!"}, "/trustDomain"},
		{"trusted node account without namespace", []string{"--set", "server.istio.trustedNodeAccounts[0]=ztunnel"}, "/server/istio/trustedNodeAccounts/0"},
		{"admin ID not a SPIFFE ID", []string{"--set", "server.adminIDs[0]=admin"}, "/server/adminIDs/0"},
		{"TTL not a duration", []string{"--set", "server.defaultTTL=one hour"}, "/server/defaultTTL"},
		{"log level", []string{"--set", "server.logLevel=verbose"}, "/server/logLevel"},
		{"unknown datastore", []string{"--set", "datastore.type=mysql"}, "/datastore/type"},
		{"postgres without a DSN secret", []string{"--set", "datastore.type=postgres", "--set", "datastore.postgres.dsnSecret.name="}, "/datastore/postgres/dsnSecret/name"},
		{"postgres without a ledger key secret", []string{"--set", "datastore.type=postgres", "--set", "datastore.postgres.ledgerKeySecret.name="}, "/datastore/postgres/ledgerKeySecret/name"},
		{"ledger key secret key with a slash", []string{"--set", "datastore.type=postgres", "--set", "datastore.postgres.ledgerKeySecret.key=a/b"}, "/datastore/postgres/ledgerKeySecret/key"},
		{"relative socket directory", []string{"--set", "agent.socketDir=run/castellan"}, "/agent/socketDir"},
		{"socket name with a slash", []string{"--set", "agent.socketName=a/b.sock"}, "/agent/socketName"},
		{"plug-in CA secret name empty", []string{"--set", "server.pluginCA.secretName="}, "/server/pluginCA/secretName"},
		{"self-managed CA on postgres without a KEK secret", append(slices.Clone(helmPostgres3), "--set", "server.pluginCA.enabled=false"), "/server/kekSecret/name"},
		{"KEK secret key with a slash", []string{"--set", "server.kekSecret.name=kek", "--set", "server.kekSecret.key=a/b"}, "/server/kekSecret/key"},
		{"KEK secret name with capitals", []string{"--set", "server.kekSecret.name=KEK"}, "/server/kekSecret/name"},
		{"plug-in CA toggle as a string", []string{"--set-string", "server.pluginCA.enabled=no"}, "/server/pluginCA/enabled"},
		{"image tag with a space", []string{"--set", "image.tag=latest version"}, "/image/tag"},
		{"registry with a trailing slash", []string{"--set", "image.registry=ghcr.io/castellan-dev/"}, "/image/registry"},
		{"memory limit not a quantity", []string{"--set", "server.resources.limits.memory=lots"}, "/server/resources/limits/memory"},
		{"toggle as a string", []string{"--set-string", "monitoring.serviceMonitor.enabled=yes"}, "/monitoring/serviceMonitor/enabled"},
		{"misspelt key", []string{"--set", "server.replica=1"}, "replica"},
		{"pull policy", []string{"--set", "image.pullPolicy=Sometimes"}, "/image/pullPolicy"},
		// Past the schema (or without it), the templates refuse what the
		// server cannot run with.
		{"two replicas on bbolt, schema skipped", []string{"--skip-schema-validation", "--set", "server.replicas=2"},
			"server.replicas=2 needs datastore.type=postgres: the bbolt datastore is one file on one volume that one process owns"},
		{"zero replicas, schema skipped", []string{"--skip-schema-validation", "--set", "server.replicas=0"}, "at least one replica"},
		{"postgres without a DSN secret, schema skipped", []string{"--skip-schema-validation", "--set", "datastore.type=postgres", "--set", "datastore.postgres.dsnSecret.name="},
			"datastore.type=postgres needs datastore.postgres.dsnSecret.name"},
		{"postgres without a ledger key secret, schema skipped", []string{"--skip-schema-validation", "--set", "datastore.type=postgres", "--set", "datastore.postgres.ledgerKeySecret=null"},
			"datastore.type=postgres needs datastore.postgres.ledgerKeySecret.name"},
		{"self-managed CA on postgres without a KEK secret, schema skipped", append([]string{"--skip-schema-validation", "--set", "server.pluginCA.enabled=false"}, helmPostgres3...),
			"datastore.type=postgres with server.pluginCA.enabled=false needs server.kekSecret.name and .key"},
		{"unknown datastore, schema skipped", []string{"--skip-schema-validation", "--set", "datastore.type=mysql"}, "datastore.type=mysql is unknown"},
		{"socket path too long for sun_path", []string{"--set", "agent.socketDir=/" + strings.Repeat("d", 100)}, "Unix socket path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := helmTemplate(t, helm, tc.args...)
			if r.err == nil {
				t.Fatalf("helm template %v rendered; want a refusal naming %q", tc.args, tc.want)
			}
			if !strings.Contains(r.stderr, tc.want) {
				t.Errorf("helm template %v: error does not name %q:\n%s", tc.args, tc.want, r.stderr)
			}
		})
	}
}

// normalize drops what the chart adds on purpose (Helm's labels and
// annotations on metadata) so the rest must equal the kustomize object.
func normalize(o k8sObject) k8sObject {
	md, _ := o["metadata"].(map[string]any)
	delete(md, "labels")
	delete(md, "annotations")
	return o
}

// TestHelmChartMatchesKustomizeBases renders the chart and checks that
// every object of the kustomize CA variant and deploy/base/agent comes out
// the same (but for metadata labels and annotations), and that the chart
// adds nothing but the dashboard: with its defaults against deploy/base/ca
// (bbolt), and with three replicas on PostgreSQL against deploy/ca-postgres.
func TestHelmChartMatchesKustomizeBases(t *testing.T) {
	helm := helmTool.path(t)
	for _, tc := range []struct {
		caDir string
		args  []string
	}{
		{"base/ca", nil},
		{"ca-postgres", helmPostgres3},
	} {
		t.Run(tc.caDir, func(t *testing.T) {
			r := helmTemplate(t, helm, append([]string{"--set", "image.tag=latest"}, tc.args...)...)
			if r.err != nil {
				t.Fatalf("helm template: %v\n%s", r.err, r.stderr)
			}
			compareWithKustomize(t, decodeManifests(t, r.stdout), decodeManifests(t, kustomizeCA(t, tc.caDir)), "deploy/"+tc.caDir)
		})
	}
}

// compareWithKustomize checks that every kustomize object but the
// Namespace is in the chart's render, equal but for metadata labels and
// annotations, and that the chart has no other object but the dashboard.
func compareWithKustomize(t *testing.T, chart, kustomize []k8sObject, where string) {
	t.Helper()
	fromHelm := map[string]k8sObject{}
	for _, o := range chart {
		fromHelm[o.kindName()] = normalize(o)
	}
	for _, o := range kustomize {
		key := o.kindName()
		if o["kind"] == "Namespace" {
			continue // the chart installs into a namespace, it does not make it
		}
		h, ok := fromHelm[key]
		if !ok {
			t.Errorf("%s is in %s but not in the chart", key, where)
			continue
		}
		delete(fromHelm, key)
		if want := normalize(o); !reflect.DeepEqual(h, want) {
			hj, _ := sigsyaml.Marshal(h)
			wj, _ := sigsyaml.Marshal(want)
			t.Errorf("%s differs between the chart and %s.\nchart:\n%s\nkustomize:\n%s", key, where, hj, wj)
		}
	}
	for key := range fromHelm {
		if key != "ConfigMap/castellan-dashboard" {
			t.Errorf("the chart renders %s, which %s does not have", key, where)
		}
	}
}

// TestHelmChartShipsDashboardAndRules checks that the chart's ConfigMap and
// PrometheusRule carry files/dashboard.json and files/alerts.yaml unchanged.
func TestHelmChartShipsDashboardAndRules(t *testing.T) {
	helm := helmTool.path(t)
	r := helmTemplate(t, helm, helmAllOn...)
	if r.err != nil {
		t.Fatalf("helm template: %v\n%s", r.err, r.stderr)
	}
	dashboard, err := os.ReadFile(filepath.Join(chartDir, "files", "dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	rulesYAML, err := os.ReadFile(filepath.Join(chartDir, "files", "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var rules map[string]any
	if err := sigsyaml.Unmarshal(rulesYAML, &rules); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, o := range decodeManifests(t, r.stdout) {
		switch o.kindName() {
		case "ConfigMap/castellan-dashboard":
			md := o["metadata"].(map[string]any)
			if md["labels"].(map[string]any)["grafana_dashboard"] != "1" {
				t.Errorf("dashboard ConfigMap lacks the label grafana_dashboard: \"1\": %v", md["labels"])
			}
			if got := o["data"].(map[string]any)["castellan.json"]; got != strings.TrimRight(string(dashboard), "\n") {
				t.Error("dashboard ConfigMap does not hold files/dashboard.json")
			}
		case "PrometheusRule/castellan":
			if !reflect.DeepEqual(o["spec"], any(rules)) {
				t.Errorf("PrometheusRule spec is not files/alerts.yaml:\n%v", o["spec"])
			}
		case "ServiceMonitor/castellan-agent":
			b, _ := json.Marshal(o["spec"])
			if !strings.Contains(string(b), `"targetLabel":"node"`) {
				t.Errorf("agent ServiceMonitor does not label series by node: %s", b)
			}
		}
		seen[o.kindName()] = true
	}
	for _, want := range []string{"ConfigMap/castellan-dashboard", "PrometheusRule/castellan",
		"ServiceMonitor/castellan-ca", "ServiceMonitor/castellan-agent",
		"Service/castellan-ca-metrics", "Service/castellan-agent-metrics"} {
		if !seen[want] {
			t.Errorf("helm template with everything on renders no %s", want)
		}
	}
}

// monitoringCRDs stand in for the Prometheus Operator's CRDs, which the
// test environment does not have: they accept any spec, so the server dry
// run proves the objects' apiVersion, kind and metadata; their specs are
// checked above (TestHelmChartShipsDashboardAndRules) and by promtool
// (TestMonitoringRulesAndDashboard).
const monitoringCRDs = `
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: servicemonitors.monitoring.coreos.com
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {plural: servicemonitors, singular: servicemonitor, kind: ServiceMonitor, listKind: ServiceMonitorList}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec: {type: object, x-kubernetes-preserve-unknown-fields: true}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: prometheusrules.monitoring.coreos.com
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {plural: prometheusrules, singular: prometheusrule, kind: PrometheusRule, listKind: PrometheusRuleList}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec: {type: object, x-kubernetes-preserve-unknown-fields: true}
`

func TestHelmChartAppliesToRealAPIServer(t *testing.T) {
	helm := helmTool.path(t)
	env := kubetest.Start(t)
	env.CreateNamespace("castellan-system")
	env.KubectlWithInput(strings.NewReader(monitoringCRDs), "apply", "-f", "-")
	env.Kubectl("wait", "--for=condition=established", "--timeout=60s",
		"crd/servicemonitors.monitoring.coreos.com", "crd/prometheusrules.monitoring.coreos.com")
	for name, args := range map[string][]string{"defaults": nil, "everything on": helmAllOn,
		"postgres, 3 replicas":      append(slices.Clone(helmAllOn), helmPostgres3...),
		"postgres, self-managed CA": append(slices.Clone(helmAllOn), helmSelfManaged...)} {
		t.Run(name, func(t *testing.T) {
			r := helmTemplate(t, helm, args...)
			if r.err != nil {
				t.Fatalf("helm template: %v\n%s", r.err, r.stderr)
			}
			objs := decodeManifests(t, r.stdout)
			out := env.For(t).KubectlWithInput(strings.NewReader(r.stdout), "apply", "--dry-run=server", "-f", "-")
			if n := strings.Count(out, "(server dry run)"); n != len(objs) || n == 0 {
				t.Errorf("%d objects accepted in server dry run, want %d:\n%s", n, len(objs), out)
			}
			wants := []string{"deployment.apps/castellan-ca", "daemonset.apps/castellan-agent",
				"service/castellan-ca-headless", "configmap/castellan-dashboard"}
			if strings.HasPrefix(name, "postgres") {
				wants = append(wants, "poddisruptionbudget.policy/castellan-ca")
			} else {
				wants = append(wants, "persistentvolumeclaim/castellan-ca-data")
			}
			for _, want := range wants {
				if !strings.Contains(out, want) {
					t.Errorf("dry-run apply output lacks %q:\n%s", want, out)
				}
			}
		})
	}
}
