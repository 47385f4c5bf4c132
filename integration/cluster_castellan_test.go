package integration_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/castellan-dev/castellan/integration/cluster"
	"github.com/castellan-dev/castellan/integration/testbin"
)

// The images the shipped manifests name (kustomize bases, :latest with
// IfNotPresent): imported under exactly these names, nothing is pulled.
const (
	serverImageRef  = "ghcr.io/castellan-dev/castellan-server:latest"
	agentImageRef   = "ghcr.io/castellan-dev/castellan-agent:latest"
	detailsImageRef = "castellan.test/castellan-bookinfo-details:v1"
	svidcheckImage  = "castellan.test/svidcheck:v1"
	detailsID       = "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-details"
)

// TestClusterCastellanIdentities installs Castellan on a real node as a
// user would — kubectl apply -k deploy/base/ca and deploy/base/agent, the
// images from deploy/image, the plug-in CA Secret, a volume for the CA's
// claim — and runs Bookinfo's details service in a pod of service account
// bookinfo-details that mounts the agent's host socket. The agent attests
// the pod through the cgroups the kubelet made and gives it
// spiffe://cluster.local/ns/bookinfo/sa/bookinfo-details: details serves
// that SVID, chained to the plugged-in root. A pod of another service
// account that mounts the same socket gets only its own identity and is
// refused details' by name over SDS (a pod of details' own account, the
// control, gets it). Deleting the details pod drops its identity from the
// agent's cache (castellan_agent_cached_identities, one per live pod on
// the node, goes down by one).
func TestClusterCastellanIdentities(t *testing.T) {
	c := cluster.Start(t)
	images := castellanImages(t, "castellan-server", "castellan-agent", "castellan-bookinfo-details")
	c.ImportLayout(filepath.Join(images, "castellan-bookinfo-details"), detailsImageRef)
	c.ImportGoBinary("./integration/cluster/svidcheck", svidcheckImage)
	client := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rootPEM := installCastellan(ctx, t, c, images, filepath.Join(testbin.RepoRoot(), "deploy", "base", "ca"))

	pod := runBookinfoDetails(ctx, t, client)
	checkServedSVID(ctx, t, pod, "9081", detailsID, rootPEM)

	// Deleting the details pod drops its identity from the agent's cache.
	agentIP := agentPodIP(ctx, t, client)
	// The agent holds one SVID per live pod on its node (the CA's, its
	// own, details'); without details, one fewer.
	live := livePods(ctx, t, client)
	waitCachedIdentities(ctx, t, agentIP, func(n int) bool { return n == live })
	zero := int64(0)
	if err := client.CoreV1().Pods("bookinfo").Delete(ctx, "details", metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	waitCachedIdentities(ctx, t, agentIP, func(n int) bool { return n == live-1 })

	// Another service account on the same node, same socket: only its own
	// identity, and details' is refused by name. The control pod runs as
	// bookinfo-details and does get it, so the refusal is not an accident.
	intruder := runSVIDCheck(ctx, t, c, "intruder", "intruder")
	if ids := svidcheckLines(intruder, "id="); len(ids) != 1 || ids[0] != "spiffe://cluster.local/ns/bookinfo/sa/intruder" {
		t.Errorf("intruder pod got identities %v, want only its own:\n%s", ids, intruder)
	}
	if got := svidcheckLines(intruder, "steal="+detailsID+" "); len(got) != 1 || got[0] != "code=NotFound" {
		t.Errorf("intruder asking SDS for %s: %v, want code=NotFound:\n%s", detailsID, got, intruder)
	}
	twin := runSVIDCheck(ctx, t, c, "details-twin", "bookinfo-details")
	if got := svidcheckLines(twin, "steal="+detailsID+" "); len(got) != 1 || !strings.HasPrefix(got[0], "got=1 ") {
		t.Errorf("a pod of bookinfo-details asking SDS for its own identity: %v, want it:\n%s", got, twin)
	}
}

// checkServedSVID checks that the pod serves, on port, an X.509-SVID for
// want that chains to the plug-in root.
func checkServedSVID(ctx context.Context, t *testing.T, pod *corev1.Pod, port, want string, rootPEM []byte) {
	t.Helper()
	chain := peerCertificates(ctx, t, net.JoinHostPort(pod.Status.PodIP, port))
	if got := uriSANs(chain[0]); len(got) != 1 || got[0] != want {
		t.Fatalf("pod %s serves an SVID for %v, want [%s]", pod.Name, got, want)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(rootPEM) {
		t.Fatal("plug-in root does not parse")
	}
	inter := x509.NewCertPool()
	for _, cert := range chain[1:] {
		inter.AddCert(cert)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("pod %s's SVID does not chain to the plugged-in root: %v", pod.Name, err)
	}
}

// runSVIDCheck runs svidcheck once as service account sa in bookinfo,
// asking SDS for details' identity, and returns its output.
func runSVIDCheck(ctx context.Context, t *testing.T, c *cluster.Cluster, name, sa string) string {
	t.Helper()
	client := c.Client()
	if sa != "bookinfo-details" {
		acct := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa, Namespace: "bookinfo"}}
		if _, err := client.CoreV1().ServiceAccounts("bookinfo").Create(ctx, acct, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	dirType := corev1.HostPathDirectory
	uid := int64(65532)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "bookinfo"},
		Spec: corev1.PodSpec{
			ServiceAccountName: sa,
			RestartPolicy:      corev1.RestartPolicyNever,
			SecurityContext:    &corev1.PodSecurityContext{RunAsUser: &uid, RunAsGroup: &uid},
			Containers: []corev1.Container{{
				Name: "svidcheck", Image: svidcheckImage, ImagePullPolicy: corev1.PullNever,
				Args:         []string{"--socket=/run/castellan/agent.sock", "--steal=" + detailsID},
				VolumeMounts: []corev1.VolumeMount{{Name: "castellan-socket", MountPath: "/run/castellan", ReadOnly: true}},
			}},
			Volumes: []corev1.Volume{{Name: "castellan-socket", VolumeSource: corev1.VolumeSource{
				HostPath: &corev1.HostPathVolumeSource{Path: "/run/castellan", Type: &dirType},
			}}},
		},
	}
	if _, err := client.CoreV1().Pods("bookinfo").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for {
		p, err := client.CoreV1().Pods("bookinfo").Get(ctx, name, metav1.GetOptions{})
		if err == nil && (p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed) {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("svidcheck pod %s did not finish: %s", name, describePods(t, client, "bookinfo"))
		case <-time.After(500 * time.Millisecond):
		}
	}
	raw, err := client.CoreV1().Pods("bookinfo").GetLogs(name, &corev1.PodLogOptions{}).DoRaw(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("svidcheck as %s:\n%s", sa, raw)
	return string(raw)
}

// svidcheckLines returns the rest of every "svidcheck: <prefix>..." line.
func svidcheckLines(out, prefix string) []string {
	var got []string
	for _, line := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(line, "svidcheck: "+prefix); ok {
			got = append(got, rest)
		}
	}
	return got
}

// livePods counts the pods of every namespace that are neither finished
// nor being deleted.
func livePods(ctx context.Context, t *testing.T, client kubernetes.Interface) int {
	t.Helper()
	pods, err := client.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
			n++
		}
	}
	return n
}

// agentPodIP returns the address of the agent's pod.
func agentPodIP(ctx context.Context, t *testing.T, client kubernetes.Interface) string {
	t.Helper()
	pods, err := client.CoreV1().Pods("castellan-system").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=castellan-agent"})
	if err != nil || len(pods.Items) != 1 || pods.Items[0].Status.PodIP == "" {
		t.Fatalf("the agent pod: %v (%d pods)", err, len(pods.Items))
	}
	return pods.Items[0].Status.PodIP
}

// waitCachedIdentities polls the agent's castellan_agent_cached_identities
// until ok accepts it, and returns it.
func waitCachedIdentities(ctx context.Context, t *testing.T, agentIP string, ok func(int) bool) int {
	t.Helper()
	last := -1
	for {
		if n, err := scrapeGauge(ctx, "http://"+net.JoinHostPort(agentIP, "8081")+"/metrics", "castellan_agent_cached_identities"); err == nil {
			last = n
			if ok(n) {
				return n
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("castellan_agent_cached_identities stayed at %d", last)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// scrapeGauge reads one unlabelled gauge from a Prometheus text endpoint.
func scrapeGauge(ctx context.Context, url, name string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(body), "\n") {
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return int(f), err
		}
	}
	return 0, fmt.Errorf("%s not in %s", name, url)
}

// installCastellan installs Castellan as deploy/README.md tells users to:
// the images (from images, under the names the manifests use), kubectl
// apply -k of the CA (caDir: deploy/base/ca or an overlay of it) and of
// deploy/base/agent, the plug-in CA Secret, and a volume for the CA's
// claim (the test cluster has no storage provisioner). It waits for the
// CA Deployment and the agent DaemonSet, and returns the root PEM.
func installCastellan(ctx context.Context, t *testing.T, c *cluster.Cluster, images, caDir string) []byte {
	t.Helper()
	// The DaemonSet's hostPath directories: removed at the end if new.
	c.RemoveAtStop("/run/castellan")
	c.RemoveAtStop("/var/lib/castellan")
	c.ImportLayout(filepath.Join(images, "castellan-server"), serverImageRef)
	c.ImportLayout(filepath.Join(images, "castellan-agent"), agentImageRef)
	client := c.Client()
	c.Kubectl("apply", "-k", caDir)
	rootPEM := createPluginCA(ctx, t, client, "castellan-system")
	createLocalVolume(ctx, t, c, "castellan-ca-data", "1Gi", 65532)
	c.Kubectl("apply", "-k", filepath.Join(testbin.RepoRoot(), "deploy", "base", "agent"))
	waitDeploymentAvailable(ctx, t, client, "castellan-system", "castellan-ca")
	waitDaemonSetReady(ctx, t, client, "castellan-system", "castellan-agent")
	return rootPEM
}

// castellanImages returns a directory of OCI layouts holding the named
// images: $CASTELLAN_IMAGES (make images writes bin/images) if set, else
// a fresh build of just these, for this machine's platform.
func castellanImages(t *testing.T, names ...string) string {
	t.Helper()
	if dir := os.Getenv("CASTELLAN_IMAGES"); dir != "" {
		return dir
	}
	out := filepath.Join(t.TempDir(), "images")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "run", "./deploy/image", "--out", out, "--version", "v0.0.0-cluster",
		"--revision", "0000000000000000000000000000000000000000", "--created", "1767225600",
		"--platforms", "linux/"+goarch(), "--only", strings.Join(names, ","))
	cmd.Dir = testbin.RepoRoot()
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building images: %v\n%s", err, b)
	}
	return out
}

func goarch() string {
	out, err := exec.Command("go", "env", "GOARCH").Output()
	if err != nil {
		return "amd64"
	}
	return strings.TrimSpace(string(out))
}

// createPluginCA makes a root and a signing intermediate for
// cluster.local and stores them as the Secret "cacerts" (Istio's keys), as
// deploy/README.md tells users to; it returns the root PEM.
func createPluginCA(ctx context.Context, t *testing.T, client kubernetes.Interface, ns string) []byte {
	t.Helper()
	td, _ := url.Parse("spiffe://cluster.local")
	now := time.Now()
	rootKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rootTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "cluster test root", Organization: []string{"castellan-test"}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(30 * 24 * time.Hour), URIs: []*url.URL{td},
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true,
	}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, rootKey.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	rootCert, _ := x509.ParseCertificate(rootDER)
	interKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	interTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "cluster test intermediate", Organization: []string{"castellan-test"}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(7 * 24 * time.Hour), URIs: []*url.URL{td},
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true, IsCA: true, MaxPathLenZero: true,
	}
	interDER, err := x509.CreateCertificate(rand.Reader, interTmpl, rootCert, interKey.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(interKey)
	rootPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rootDER})
	interPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: interDER})
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "cacerts", Namespace: ns},
		Data: map[string][]byte{
			"ca-key.pem":     pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
			"cert-chain.pem": append(append([]byte(nil), interPEM...), rootPEM...),
			"ca-cert.pem":    interPEM,
			"root-cert.pem":  rootPEM,
		},
	}
	if _, err := client.CoreV1().Secrets(ns).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating the cacerts Secret: %v", err)
	}
	return rootPEM
}

// createLocalVolume provides a PersistentVolume for the claim name: a local
// volume on the node (a directory in the cluster's directory), pre-bound to
// the claim, the way a cluster's storage would. Its root belongs to gid
// (the pod's fsGroup) and is group-writable, as fsGroup would make it.
func createLocalVolume(ctx context.Context, t *testing.T, c *cluster.Cluster, claim, size string, gid int) {
	t.Helper()
	dir := filepath.Join(c.Dir(), "volumes", claim)
	if err := os.MkdirAll(dir, 0o770); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, 0, gid); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o2770); err != nil {
		t.Fatal(err)
	}
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: "local-" + claim},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			ClaimRef:                      &corev1.ObjectReference{Namespace: "castellan-system", Name: claim},
			PersistentVolumeSource:        corev1.PersistentVolumeSource{Local: &corev1.LocalVolumeSource{Path: dir}},
			NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "kubernetes.io/hostname", Operator: corev1.NodeSelectorOpIn, Values: []string{cluster.NodeName}}},
			}}}},
		},
	}
	if _, err := c.Client().CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating the volume: %v", err)
	}
}

// runBookinfoDetails runs details as service account bookinfo-details in
// namespace bookinfo, the agent's socket directory mounted from the host,
// and waits until it is Running.
func runBookinfoDetails(ctx context.Context, t *testing.T, client kubernetes.Interface) *corev1.Pod {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "bookinfo"}}
	if _, err := client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "bookinfo-details", Namespace: "bookinfo"}}
	if _, err := client.CoreV1().ServiceAccounts("bookinfo").Create(ctx, sa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	dirType := corev1.HostPathDirectory
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "details", Namespace: "bookinfo", Labels: map[string]string{"app": "details"}},
		Spec: corev1.PodSpec{
			ServiceAccountName: "bookinfo-details",
			Containers: []corev1.Container{{
				Name:            "details",
				Image:           detailsImageRef,
				ImagePullPolicy: corev1.PullNever,
				Args:            []string{"--listen=:9081", "--socket=/run/castellan/agent.sock", "--trust-domain=cluster.local"},
				VolumeMounts:    []corev1.VolumeMount{{Name: "castellan-socket", MountPath: "/run/castellan", ReadOnly: true}},
			}},
			Volumes: []corev1.Volume{{Name: "castellan-socket", VolumeSource: corev1.VolumeSource{
				HostPath: &corev1.HostPathVolumeSource{Path: "/run/castellan", Type: &dirType},
			}}},
		},
	}
	if _, err := client.CoreV1().Pods("bookinfo").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return waitPodRunning(ctx, t, client, "bookinfo", "details")
}

// peerCertificates connects to addr over TLS without a client certificate
// and returns the certificates the server presented (the handshake itself
// may then fail: details requires productpage's certificate). It retries
// until the server presents one, bounded by ctx.
func peerCertificates(ctx context.Context, t *testing.T, addr string) []*x509.Certificate {
	t.Helper()
	var last error
	for {
		var chain []*x509.Certificate
		cfg := &tls.Config{
			InsecureSkipVerify: true, // the test verifies the chain itself, against the plug-in root
			VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
				for _, der := range raw {
					cert, err := x509.ParseCertificate(der)
					if err != nil {
						return err
					}
					chain = append(chain, cert)
				}
				return nil
			},
		}
		d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 3 * time.Second}, Config: cfg}
		conn, err := d.DialContext(ctx, "tcp", addr)
		if conn != nil {
			conn.Close()
		}
		if len(chain) > 0 {
			return chain
		}
		last = err
		select {
		case <-ctx.Done():
			t.Fatalf("no certificate from %s: %v", addr, last)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func uriSANs(cert *x509.Certificate) []string {
	var out []string
	for _, u := range cert.URIs {
		out = append(out, u.String())
	}
	return out
}

func waitDeploymentAvailable(ctx context.Context, t *testing.T, client kubernetes.Interface, ns, name string) {
	t.Helper()
	var last *appsv1.Deployment
	for {
		d, err := client.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			last = d
			if d.Status.AvailableReplicas >= 1 && d.Status.AvailableReplicas == d.Status.Replicas {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("deployment %s/%s not available: %+v; pods: %s", ns, name, statusOf(last), describePods(t, client, ns))
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func statusOf(d *appsv1.Deployment) any {
	if d == nil {
		return "(never read)"
	}
	return d.Status
}

func waitDaemonSetReady(ctx context.Context, t *testing.T, client kubernetes.Interface, ns, name string) {
	t.Helper()
	for {
		d, err := client.AppsV1().DaemonSets(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil && d.Status.DesiredNumberScheduled == 1 && d.Status.NumberReady == 1 {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("daemonset %s/%s not ready; pods: %s", ns, name, describePods(t, client, ns))
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// describePods summarises every pod of ns, with the tail of each log.
func describePods(t *testing.T, client kubernetes.Interface, ns string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pods, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for i := range pods.Items {
		p := &pods.Items[i]
		fmt.Fprintf(&b, "\n%s: %s", p.Name, describePod(p))
		tailLines := int64(15)
		if raw, err := client.CoreV1().Pods(ns).GetLogs(p.Name, &corev1.PodLogOptions{TailLines: &tailLines}).DoRaw(ctx); err == nil {
			fmt.Fprintf(&b, "\n  log: %s", strings.ReplaceAll(string(raw), "\n", "\n  "))
		}
	}
	events, err := client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
	if err == nil {
		for _, e := range events.Items {
			if e.Type == corev1.EventTypeWarning {
				fmt.Fprintf(&b, "\nevent %s/%s: %s %s", e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Reason, e.Message)
			}
		}
	}
	return b.String()
}
