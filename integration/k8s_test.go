package integration_test

import (
	"bufio"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/castellan-dev/castellan/agent/client"
	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/integration/kubetest"
	"github.com/castellan-dev/castellan/integration/testbin"
	"github.com/castellan-dev/castellan/internal/testroot"
)

const (
	k8sHelperEnv = "CASTELLAN_K8S_HELPER_SOCKET"
	k8sTD        = "cluster.local"
)

// k8sRig is a real kube-apiserver with a real castellan-server and
// castellan-agent in Kubernetes mode, on loopback.
type k8sRig struct {
	t                      *testing.T
	env                    *kubetest.Env
	srvDir, agentDir, sock string
	listen                 string
	agentLog               *k8sLog
	agentHTTP              string
	cartA, cartB, payA     *corev1.Pod
}

func startK8sRig(t *testing.T) *k8sRig {
	env := kubetest.Start(t)
	var b testbin.Builder
	t.Cleanup(b.Cleanup)
	server := b.Path(t, "castellan-server")
	dir := t.TempDir()
	r := &k8sRig{t: t, env: env, srvDir: filepath.Join(dir, "srv"), agentDir: filepath.Join(dir, "agent"),
		sock: filepath.Join(dir, "agent.sock"), listen: freeAddr(t)}
	if err := os.Mkdir(r.srvDir, 0o700); err != nil {
		t.Fatal(err)
	}
	env.CreateNamespace("castellan-system")
	env.CreateServiceAccount("castellan-system", "castellan-agent")
	env.CreateServiceAccount("castellan-system", "impostor")
	env.CreateNamespace("shop")
	env.CreateServiceAccount("shop", "cart")
	env.CreateServiceAccount("shop", "payments")
	env.CreateNode("node-a")
	env.CreateNode("node-b")
	env.CreatePod("castellan-system", "agent-a", "castellan-agent", "node-a")
	env.CreatePod("castellan-system", "impostor-a", "impostor", "node-a")
	r.cartA = env.CreatePod("shop", "cart-a", "cart", "node-a")
	r.cartB = env.CreatePod("shop", "cart-b", "cart", "node-b")
	r.payA = env.CreatePod("shop", "payments-a", "payments", "node-a")

	srv := exec.Command(server, "--data-dir", r.srvDir, "--listen", r.listen, "--http-listen", freeAddr(t),
		"--trust-domain", k8sTD, "--kubeconfig", env.Kubeconfig(), "--k8s-agent-sa", "castellan-system/castellan-agent",
		"--k8s-bundle-configmaps",
		// The rig signs 1000 CSRs for one pod identity to count TokenReviews;
		// the issuance quotas (tested in quota_test.go) would refuse them.
		"--quota-identity-per-ttl", "5000", "--quota-node-burst", "5000")
	srvLog := &k8sLog{}
	srv.Stderr = srvLog
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k8sStop(srv) })
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("castellan-server log:\n%s", srvLog)
		}
	})
	k8sEventually(t, 60*time.Second, "server admin socket", func() bool {
		_, err := os.Stat(filepath.Join(r.srvDir, "admin.sock"))
		return err == nil
	})
	return r
}

// startAgent runs the agent of node-a with a token bound to its pod.
func (r *k8sRig) startAgent(agent string) {
	t := r.t
	tokenFile := filepath.Join(t.TempDir(), "token")
	tok := r.env.PodToken("castellan-system", "castellan-agent", "agent-a", "castellan-ca", time.Hour)
	if err := os.WriteFile(tokenFile, []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
	r.agentHTTP = freeAddr(t)
	cmd := exec.Command(agent, "--server-address", r.listen, "--trust-bundle", filepath.Join(r.srvDir, "bundle.pem"),
		"--data-dir", r.agentDir, "--socket", r.sock, "--http-listen", r.agentHTTP, "--log-level", "debug",
		"--trust-domain", k8sTD, "--attestor", "k8s", "--node-name", "node-a", "--k8s-token-file", tokenFile,
		"--kubeconfig", r.env.Kubeconfig())
	r.agentLog = &k8sLog{}
	cmd.Stderr = r.agentLog
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k8sStop(cmd) })
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("castellan-agent log:\n%s", r.agentLog)
		}
	})
	k8sEventually(t, 60*time.Second, "agent SVID", func() bool {
		_, err := os.Stat(filepath.Join(r.agentDir, "agent.pem"))
		return err == nil
	})
}

// cachedIdentities reads the agent's castellan_agent_cached_identities.
func (r *k8sRig) cachedIdentities(t *testing.T) int {
	t.Helper()
	resp, err := http.Get("http://" + r.agentHTTP + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(body)) {
		if v, ok := strings.CutPrefix(line, "castellan_agent_cached_identities "); ok {
			n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatal(err)
			}
			return int(n)
		}
	}
	t.Fatal("agent exports no castellan_agent_cached_identities")
	return 0
}

// tokenReviews returns how many TokenReviews the apiserver has served.
func (r *k8sRig) tokenReviews() int {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	body, err := r.env.Client().CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		r.t.Fatal(err)
	}
	n := 0
	for line := range strings.Lines(string(body)) {
		if strings.HasPrefix(line, "apiserver_request_total{") && strings.Contains(line, `resource="tokenreviews"`) && strings.Contains(line, `verb="POST"`) {
			f := strings.Fields(line)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			if err != nil {
				r.t.Fatalf("metric line %q: %v", line, err)
			}
			n += int(v)
		}
	}
	return n
}

func TestK8sAgentIdentitiesAndNodeRestriction(t *testing.T) {
	testroot.Require(t, "place processes in kubelet-style cgroups")
	r := startK8sRig(t)
	var b testbin.Builder
	t.Cleanup(b.Cleanup)
	before := r.tokenReviews()
	r.startAgent(b.Path(t, "castellan-agent"))

	t.Run("agent bootstraps with its token and serves a process in pod P its SVID", func(t *testing.T) {
		out := r.runInPod(t, r.cartA, 60*time.Second)
		if want := "ID=spiffe://cluster.local/ns/shop/sa/cart"; out != want {
			t.Fatalf("workload in pod shop/cart-a got %q, want %q", out, want)
		}
	})
	t.Run("process in no pod is refused", func(t *testing.T) {
		out := r.runInPod(t, nil, 3*time.Second)
		if !strings.HasPrefix(out, "ERR=") {
			t.Fatalf("process outside any pod got %q", out)
		}
	})

	t.Run("trust bundle is published in every namespace", func(t *testing.T) {
		want, err := os.ReadFile(filepath.Join(r.srvDir, "bundle.pem"))
		if err != nil {
			t.Fatal(err)
		}
		for _, ns := range []string{"shop", "castellan-system", "default"} {
			var got string
			k8sEventually(t, 20*time.Second, "ConfigMap castellan-ca-root-cert in "+ns, func() bool {
				cm, err := r.env.Client().CoreV1().ConfigMaps(ns).Get(context.Background(), "castellan-ca-root-cert", metav1.GetOptions{})
				if err == nil {
					got = cm.Data["root-cert.pem"]
				}
				return got != ""
			})
			if strings.TrimSpace(got) != strings.TrimSpace(string(want)) {
				t.Fatalf("%s: ConfigMap holds\n%s\nwant the CA's bundle\n%s", ns, got, want)
			}
		}
	})

	ca := r.agentConn(t)
	t.Run("1000 CSRs from one agent cost one TokenReview", func(t *testing.T) {
		r.signMany(t, ca, 1000)
		if n := r.tokenReviews() - before; n != 1 {
			t.Fatalf("agent bootstrap and 1000 CSRs cost %d TokenReviews, want 1", n)
		}
	})
	t.Run("node restriction", func(t *testing.T) {
		cart := spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/cart")
		r.wantSignDenied(t, ca, cart, r.cartB, "runs on node \"node-b\", not on the caller's node \"node-a\"")
		r.wantSignDenied(t, ca, cart, r.payA, "runs as service account shop/payments")
		gone := r.env.CreatePod("shop", "cart-gone", "cart", "node-a")
		zero := int64(0)
		if err := r.env.Client().CoreV1().Pods("shop").Delete(context.Background(), gone.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
			t.Fatal(err)
		}
		// The CA's pod informer learns of the deletion shortly after it; it
		// may first see the pod marked for deletion ("being deleted", also a
		// refusal) and then see it gone.
		k8sEventually(t, 30*time.Second, "refusal for the deleted pod", func() bool {
			_, err := ca.SignX509SVID(context.Background(), &cav1.SignX509SVIDRequest{Csr: k8sCSR(t, cart), PodUid: string(gone.UID)})
			return status.Code(err) == codes.PermissionDenied && strings.Contains(err.Error(), "no pod with uid")
		})
		r.wantSignDenied(t, ca, cart, gone, "no pod with uid")
	})
	t.Run("identity of a pod that goes away is dropped", func(t *testing.T) {
		// Every live pod on node-a has its identity: agent-a, impostor-a,
		// cart-a and payments-a.
		k8sEventually(t, 20*time.Second, "four cached identities", func() bool { return r.cachedIdentities(t) == 4 })
		zero := int64(0)
		if err := r.env.Client().CoreV1().Pods("shop").Delete(context.Background(), r.payA.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
			t.Fatal(err)
		}
		k8sEventually(t, 20*time.Second, "the deleted pod's identity dropped", func() bool { return r.cachedIdentities(t) == 3 })
	})
	t.Run("token refusals", func(t *testing.T) {
		r.wantAttestRefused(t, r.env.PodToken("castellan-system", "castellan-agent", "agent-a", kubetest.AudienceIstio, time.Hour), `not "castellan-ca"`)
		r.wantAttestRefused(t, r.env.PodToken("castellan-system", "impostor", "impostor-a", "castellan-ca", time.Hour), "only the agent service account")
		r.wantAttestRefused(t, r.expiredToken(t), "expired")
	})
}

// runInPod runs a helper process placed in pod's kubelet-style cgroup (no
// cgroup when pod is nil) that fetches its X.509-SVID from the agent's
// Workload API, and returns its "ID=..." or "ERR=..." line.
func (r *k8sRig) runInPod(t *testing.T, pod *corev1.Pod, wait time.Duration) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestK8sWorkloadHelper$")
	cmd.Env = append(os.Environ(), k8sHelperEnv+"="+r.sock, "CASTELLAN_K8S_HELPER_WAIT="+wait.String())
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	if pod != nil {
		_, cid, _ := strings.Cut(pod.Status.ContainerStatuses[0].ContainerID, "://")
		placeInCgroup(t, cmd.Process.Pid, string(pod.UID), cid)
	}
	if _, err := io.WriteString(stdin, "go\n"); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if l := sc.Text(); strings.HasPrefix(l, "ID=") || strings.HasPrefix(l, "ERR=") {
				lines <- l
				return
			}
		}
		lines <- "ERR=helper printed no result"
	}()
	select {
	case l := <-lines:
		return l
	case <-time.After(wait + 30*time.Second):
		t.Fatal("helper did not answer")
		return ""
	}
}

// placeInCgroup moves pid into kubepods/besteffort/pod<uid>/<cid> of the
// cgroup v1 pids hierarchy and, where writable, the unified hierarchy, as
// the kubelet's cgroupfs driver does; the directories go when the test ends.
func placeInCgroup(t *testing.T, pid int, uid, cid string) {
	t.Helper()
	placed := 0
	for _, root := range []string{"/sys/fs/cgroup/pids", "/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
		if _, err := os.Stat(filepath.Join(root, "cgroup.procs")); err != nil {
			continue
		}
		var created []string
		dir := root
		for _, seg := range []string{"kubepods", "besteffort", "pod" + uid, cid} {
			dir = filepath.Join(dir, seg)
			if err := os.Mkdir(dir, 0o755); err == nil {
				created = append(created, dir)
			} else if !os.IsExist(err) {
				break
			}
		}
		t.Cleanup(func() {
			// The helper has exited (or been killed) by now; move any
			// leftover back to the root, then remove what we created.
			for i := len(created) - 1; i >= 0; i-- {
				for range 50 {
					if os.Remove(created[i]) == nil || os.IsNotExist(os.Remove(created[i])) {
						break
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
		})
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
			t.Logf("cannot place %d in %s: %v", pid, dir, err)
			continue
		}
		placed++
		if root == "/sys/fs/cgroup/unified" {
			break // hybrid host: /sys/fs/cgroup itself is not a cgroup
		}
	}
	if placed == 0 {
		t.Skip("no writable cgroup hierarchy to place workload processes in")
	}
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if !strings.Contains(string(b), "pod"+uid) {
		t.Fatalf("process %d not in pod cgroup:\n%s", pid, b)
	}
}

// TestK8sWorkloadHelper is the workload process of runInPod; it does
// nothing unless started by it.
func TestK8sWorkloadHelper(t *testing.T) {
	sock := os.Getenv(k8sHelperEnv)
	if sock == "" {
		t.Skip("helper process only")
	}
	wait, err := time.ParseDuration(os.Getenv("CASTELLAN_K8S_HELPER_WAIT"))
	if err != nil {
		fmt.Println("ERR=" + err.Error())
		return
	}
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		fmt.Println("ERR=" + err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	var last error
	for ctx.Err() == nil {
		fctx, fcancel := context.WithTimeout(ctx, 5*time.Second)
		svid, err := workloadapi.FetchX509SVID(fctx, workloadapi.WithAddr("unix://"+sock))
		fcancel()
		if err == nil {
			fmt.Println("ID=" + svid.ID.String())
			return
		}
		last = err
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
	fmt.Printf("ERR=%v\n", last)
}

// agentConn dials the CA with the agent's SVID, as the agent (or an
// attacker holding its key) would.
func (r *k8sRig) agentConn(t *testing.T) cav1.CertificateAuthorityServiceClient {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(r.agentDir, "agent.pem"))
	if err != nil {
		t.Fatal(err)
	}
	var certs, key []byte
	for rest := data; ; {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			break
		}
		if blk.Type == "CERTIFICATE" {
			certs = append(certs, pem.EncodeToMemory(blk)...)
		} else {
			key = pem.EncodeToMemory(blk)
		}
	}
	svid, err := x509svid.Parse(certs, key)
	if err != nil {
		t.Fatal(err)
	}
	td := spiffeid.RequireTrustDomainFromString(k8sTD)
	bundle, err := x509bundle.Load(td, filepath.Join(r.srvDir, "bundle.pem"))
	if err != nil {
		t.Fatal(err)
	}
	conf := tlsconfig.MTLSClientConfig(svid, bundle, tlsconfig.AuthorizeID(spiffeid.RequireFromPath(td, "/castellan/server")))
	conn, err := grpc.NewClient(r.listen, grpc.WithTransportCredentials(credentials.NewTLS(conf)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return cav1.NewCertificateAuthorityServiceClient(conn)
}

func k8sCSR(t *testing.T, id spiffeid.ID) []byte {
	t.Helper()
	key, err := client.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := client.NewCSR(key, id)
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

// signMany signs n SVIDs for pod cart-a in batches, checking each.
func (r *k8sRig) signMany(t *testing.T, ca cav1.CertificateAuthorityServiceClient, n int) {
	t.Helper()
	cart := spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/cart")
	csr := k8sCSR(t, cart) // one key suffices: the CA signs each CSR anew
	for done := 0; done < n; done += 100 {
		var reqs []*cav1.SignX509SVIDRequest
		for range min(100, n-done) {
			reqs = append(reqs, &cav1.SignX509SVIDRequest{Csr: csr, PodUid: string(r.cartA.UID)})
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		resp, err := ca.BatchSignX509SVID(ctx, &cav1.BatchSignX509SVIDRequest{Requests: reqs})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		for i, res := range resp.GetResults() {
			if res.GetSvid().GetSpiffeId() != cart.String() {
				t.Fatalf("CSR %d: %v", done+i, res)
			}
		}
	}
}

func (r *k8sRig) wantSignDenied(t *testing.T, ca cav1.CertificateAuthorityServiceClient, id spiffeid.ID, pod *corev1.Pod, msg string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := ca.SignX509SVID(ctx, &cav1.SignX509SVIDRequest{Csr: k8sCSR(t, id), PodUid: string(pod.UID)})
	if st, _ := status.FromError(err); st.Code() != codes.PermissionDenied || !strings.Contains(st.Message(), msg) {
		t.Fatalf("SVID %s for pod %s/%s: got %v, want PermissionDenied saying %q", id, pod.Namespace, pod.Name, err, msg)
	}
}

// wantAttestRefused attests with token over server-only TLS.
func (r *k8sRig) wantAttestRefused(t *testing.T, token, msg string) {
	t.Helper()
	td := spiffeid.RequireTrustDomainFromString(k8sTD)
	bundle, err := x509bundle.Load(td, filepath.Join(r.srvDir, "bundle.pem"))
	if err != nil {
		t.Fatal(err)
	}
	conf := tlsconfig.TLSClientConfig(bundle, tlsconfig.AuthorizeID(spiffeid.RequireFromPath(td, "/castellan/server")))
	conn, err := grpc.NewClient(r.listen, grpc.WithTransportCredentials(credentials.NewTLS(conf)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = cav1.NewCertificateAuthorityServiceClient(conn).AttestAgent(ctx, &cav1.AttestAgentRequest{
		Attestation: &cav1.AttestAgentRequest_K8SSat{K8SSat: token}, Csr: k8sCSR(t, spiffeid.ID{}),
	})
	if st, _ := status.FromError(err); st.Code() != codes.Unauthenticated || !strings.Contains(st.Message(), msg) {
		t.Fatalf("got %v, want Unauthenticated saying %q", err, msg)
	}
}

// expiredToken returns a service-account token for the agent's pod that
// the apiserver's own key signed, but that expired a minute ago (the
// TokenRequest API will not issue one, so it is signed here with the
// apiserver's service-account key).
func (r *k8sRig) expiredToken(t *testing.T) string {
	t.Helper()
	keyPEM, err := os.ReadFile(filepath.Join(filepath.Dir(r.env.LogFile()), "pki", "sa.key"))
	if err != nil {
		t.Skipf("apiserver service-account key not found: %v", err)
	}
	blk, _ := pem.Decode(keyPEM)
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	key := k.(*rsa.PrivateKey)
	pubDER, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	kid := sha256.Sum256(pubDER)
	pod, err := r.env.Client().CoreV1().Pods("castellan-system").Get(context.Background(), "agent-a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	claims := map[string]any{
		"iss": r.env.Issuer(), "aud": []string{"castellan-ca"}, "sub": "system:serviceaccount:castellan-system:castellan-agent",
		"iat": now.Add(-20 * time.Minute).Unix(), "nbf": now.Add(-20 * time.Minute).Unix(), "exp": now.Add(-time.Minute).Unix(),
		"kubernetes.io": map[string]any{
			"namespace":      "castellan-system",
			"serviceaccount": map[string]any{"name": "castellan-agent"},
			"pod":            map[string]any{"name": pod.Name, "uid": string(pod.UID)},
			"node":           map[string]any{"name": "node-a"},
		},
	}
	hdr, _ := json.Marshal(map[string]any{"alg": "RS256", "kid": base64.RawURLEncoding.EncodeToString(kid[:])})
	body, _ := json.Marshal(claims)
	enc := base64.RawURLEncoding.EncodeToString
	signing := enc(hdr) + "." + enc(body)
	digest := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	return signing + "." + enc(sig)
}

// k8sEventually polls cond every 100 ms until it holds or d passes.
func k8sEventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after %s", what, d)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// k8sStop stops cmd with SIGTERM, then SIGKILL after 10 s.
func k8sStop(cmd *exec.Cmd) {
	if cmd.Process == nil || cmd.ProcessState != nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// k8sLog collects a process's output while it runs.
type k8sLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *k8sLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *k8sLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
