package integration_test

import (
	"slices"
	"strings"
	"testing"
)

// helmSelfManaged is three replicas on PostgreSQL with no plug-in CA: the
// CA makes and rotates its own authorities, sealed under a shared KEK.
var helmSelfManaged = append(slices.Clone(helmPostgres3),
	"--set", "server.pluginCA.enabled=false", "--set", "server.kekSecret.name=castellan-kek")

// helmServerPod returns the castellan-server container and the pod
// volumes of the rendered Deployment castellan-ca.
func helmServerPod(t *testing.T, objs []k8sObject) (container map[string]any, volumes []any) {
	t.Helper()
	for _, o := range objs {
		if o.kindName() != "Deployment/castellan-ca" {
			continue
		}
		spec := o["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
		for _, c := range spec["containers"].([]any) {
			if c := c.(map[string]any); c["name"] == "castellan-server" {
				vols, _ := spec["volumes"].([]any)
				return c, vols
			}
		}
	}
	t.Fatal("no castellan-server container in Deployment/castellan-ca")
	return nil, nil
}

// helmNamed returns the element of list whose name is name, nil if none.
func helmNamed(list []any, name string) map[string]any {
	for _, v := range list {
		if m, ok := v.(map[string]any); ok && m["name"] == name {
			return m
		}
	}
	return nil
}

// TestHelmChartMountsSharedKEK renders a self-managed CA on PostgreSQL:
// every replica gets --kek-file from the Secret server.kekSecret, mounted
// read-only and owner-read-only with only its key, and no plug-in CA
// flags or volume; the defaults (plug-in CA) have no KEK at all.
func TestHelmChartMountsSharedKEK(t *testing.T) {
	helm := helmTool.path(t)
	r := helmTemplate(t, helm, helmSelfManaged...)
	if r.err != nil {
		t.Fatalf("helm template: %v\n%s", r.err, r.stderr)
	}
	c, vols := helmServerPod(t, decodeManifests(t, r.stdout))
	var args []string
	for _, a := range c["args"].([]any) {
		args = append(args, a.(string))
	}
	if !slices.Contains(args, "--kek-file=/etc/castellan/kek/kek") {
		t.Errorf("server args lack --kek-file=/etc/castellan/kek/kek: %v", args)
	}
	for _, a := range args {
		if strings.HasPrefix(a, "--root-cert") || strings.HasPrefix(a, "--intermediate-") {
			t.Errorf("self-managed CA still given the plug-in flag %s", a)
		}
	}
	mounts, _ := c["volumeMounts"].([]any)
	if m := helmNamed(mounts, "kek"); m == nil || m["mountPath"] != "/etc/castellan/kek" || m["readOnly"] != true {
		t.Errorf("kek mount %v, want /etc/castellan/kek read-only", m)
	}
	if helmNamed(mounts, "cacerts") != nil || helmNamed(vols, "cacerts") != nil {
		t.Error("self-managed CA still mounts the cacerts Secret")
	}
	v := helmNamed(vols, "kek")
	sec, _ := v["secret"].(map[string]any)
	items, _ := sec["items"].([]any)
	if sec == nil || sec["secretName"] != "castellan-kek" || sec["defaultMode"] != float64(0o400) ||
		len(items) != 1 || items[0].(map[string]any)["key"] != "kek" || items[0].(map[string]any)["path"] != "kek" {
		t.Errorf("kek volume %v, want Secret castellan-kek, mode 0400, only its key kek", v)
	}

	r = helmTemplate(t, helm)
	if r.err != nil {
		t.Fatalf("helm template (defaults): %v\n%s", r.err, r.stderr)
	}
	if strings.Contains(r.stdout, "kek") {
		t.Error("the defaults (plug-in CA) render a KEK")
	}
	if !strings.Contains(r.stdout, "--root-cert=/etc/castellan/cacerts/root-cert.pem") {
		t.Error("the defaults lost the plug-in CA")
	}
}
