// Package kubetest runs a real Kubernetes control plane (etcd and
// kube-apiserver v1.34.4, no controller-manager, scheduler or kubelet) on
// 127.0.0.1 for Castellan's integration tests, and offers helpers to create
// the objects those tests need: namespaces, service accounts, nodes, pods
// and pod-bound service-account tokens.
//
// The control plane is the kube-testenv binary built by
// integration/kube/testenv/build.sh. It is looked up in
// $CASTELLAN_KUBE_TESTENV, else in
// ${CASTELLAN_CACHE:-$HOME/.cache/castellan}/bin/kube-testenv. When it is
// missing, Start skips the test, unless CASTELLAN_REQUIRE_KUBE=1, in which
// case it fails it (make test sets that, so CI cannot skip silently).
//
// What is different from a real cluster, since no controllers run:
//   - No namespace, service-account or token controller: CreateNamespace
//     creates the namespace's "default" ServiceAccount itself, and other
//     service accounts must be created (CreateServiceAccount) before pods
//     use them, because the ServiceAccount admission plugin stays enabled
//     (pods get the usual projected kube-api-access token volume).
//   - No scheduler or kubelet: CreatePod binds the pod to a node by
//     spec.nodeName and writes a Running status itself.
//   - Deleting a namespace leaves it Terminating forever; use fresh names.
//
// All admission plugins enabled by default in v1.34 stay enabled, including
// the mutating and validating webhook plugins.
package kubetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
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

	"github.com/castellan-dev/castellan/internal/freeport"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

const (
	// AdminUser is the user name of the admin credential (a client
	// certificate in group system:masters) used by RESTConfig and
	// Kubeconfig.
	AdminUser = "kubetest-admin"

	// AudienceCastellan and AudienceIstio are accepted API audiences of the
	// apiserver, besides its issuer URL (see Env.Audiences).
	AudienceCastellan = "castellan-ca"
	// AudienceIstio is the audience Istio's agent requests tokens for.
	AudienceIstio = "istio-ca"

	// ServiceClusterIPRange is the apiserver's --service-cluster-ip-range.
	ServiceClusterIPRange = "10.96.0.0/12"
	serviceClusterIP      = "10.96.0.1"

	// EnvBinary names the environment variable that overrides the path of
	// the kube-testenv binary.
	EnvBinary = "CASTELLAN_KUBE_TESTENV"
	// EnvRequire names the environment variable that, set to 1, turns a
	// missing kube-testenv binary from a skip into a test failure.
	EnvRequire = "CASTELLAN_REQUIRE_KUBE"
	// EnvCache names the environment variable for Castellan's build cache
	// (default $HOME/.cache/castellan); the binary is in its bin/.
	EnvCache = "CASTELLAN_CACHE"

	startAttempts = 3
	readyTimeout  = 120 * time.Second
	stopTimeout   = 15 * time.Second
	// requestTimeout bounds each helper's API call.
	requestTimeout = 30 * time.Second
)

// ErrNoBinary is returned (wrapped) by Launch and Binary when the
// kube-testenv binary is not found.
var ErrNoBinary = errors.New("kube-testenv binary not found")

// Env is a running etcd + kube-apiserver. Create it with Start (one per
// test) or Launch (shared, e.g. from TestMain; bind it to a test with For).
// Its methods are safe for concurrent use.
type Env struct {
	t      testing.TB // nil for an Env from Launch not bound with For
	shared *state
}

// state is what For copies share.
type state struct {
	binary     string
	dir        string
	url        string
	issuer     string
	pki        *pki
	kubeconfig string
	restConfig *rest.Config
	client     kubernetes.Interface
	logFile    string

	cmd      *exec.Cmd
	exited   chan struct{} // closed when cmd has exited
	exitErr  error         // valid after exited is closed
	stopOnce sync.Once
	stopErr  error
	ownsDir  bool
}

// Binary returns the path of the kube-testenv binary, or an error wrapping
// ErrNoBinary that says how to build it.
func Binary() (string, error) {
	path := os.Getenv(EnvBinary)
	if path == "" {
		cache := os.Getenv(EnvCache)
		if cache == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return "", fmt.Errorf("%w: no %s and no home directory: %v", ErrNoBinary, EnvBinary, err)
			}
			cache = filepath.Join(home, ".cache", "castellan")
		}
		path = filepath.Join(cache, "bin", "kube-testenv")
	}
	fi, err := os.Stat(path)
	if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		return "", fmt.Errorf("%w at %s (build it with integration/kube/testenv/build.sh, or set %s)", ErrNoBinary, path, EnvBinary)
	}
	return path, nil
}

// requireBinary returns the binary, or skips or fails t when it is missing.
func requireBinary(t testing.TB) string {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		if os.Getenv(EnvRequire) == "1" {
			t.Fatalf("kubetest: %v; %s=1 forbids skipping", err, EnvRequire)
		}
		t.Skipf("kubetest: %v; skipping (set %s=1 to fail instead)", err, EnvRequire)
	}
	return bin
}

// Start runs a fresh control plane for t and stops it, removing its files,
// when t ends. It skips t if the kube-testenv binary is missing (fails it
// if CASTELLAN_REQUIRE_KUBE=1), and fails t if the apiserver does not
// become ready in time.
func Start(t testing.TB) *Env {
	t.Helper()
	bin := requireBinary(t)
	st, err := launch(context.Background(), bin, t.TempDir(), false)
	if err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	e := &Env{t: t, shared: st}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kubetest: apiserver log tail (%s):\n%s", st.logFile, tail(st.logFile, 40))
		}
		if err := e.Stop(); err != nil {
			t.Errorf("kubetest: stopping control plane: %v", err)
		}
	})
	return e
}

// Launch runs a control plane not tied to a test, for sharing among the
// tests of a package (call it from TestMain and Stop it after m.Run). The
// returned error wraps ErrNoBinary when the binary is missing; callers
// should then skip or fail as Start does. Helpers that create objects need a
// test: use For(t) to get an Env bound to one.
func Launch(ctx context.Context) (*Env, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "kubetest-")
	if err != nil {
		return nil, err
	}
	st, err := launch(ctx, bin, dir, true)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return &Env{shared: st}, nil
}

// For returns a view of e whose helpers report failures to t. The control
// plane is shared, not copied.
func (e *Env) For(t testing.TB) *Env {
	return &Env{t: t, shared: e.shared}
}

// Stop kills the control plane's process group, waits for it to exit and
// removes its temporary files (Launch only; Start's files go with the test's
// TempDir). It is idempotent; Start registers it as a test cleanup.
func (e *Env) Stop() error {
	st := e.shared
	st.stopOnce.Do(func() {
		st.stopErr = st.kill()
		if st.ownsDir {
			if err := os.RemoveAll(st.dir); err != nil && st.stopErr == nil {
				st.stopErr = err
			}
		}
	})
	return st.stopErr
}

// kill sends SIGTERM to the process group, then SIGKILL if it has not
// exited within stopTimeout.
func (st *state) kill() error {
	if st.cmd == nil || st.cmd.Process == nil {
		return nil
	}
	pgid := st.cmd.Process.Pid
	select {
	case <-st.exited:
		_ = syscall.Kill(-pgid, syscall.SIGKILL) // stragglers, if any
		return nil
	default:
	}
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-st.exited:
	case <-time.After(stopTimeout):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		select {
		case <-st.exited:
		case <-time.After(stopTimeout):
			return fmt.Errorf("kube-testenv (pid %d) did not exit after SIGKILL", pgid)
		}
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	return nil
}

// launch starts kube-testenv in dir, retrying on a lost port race.
func launch(ctx context.Context, bin, dir string, ownsDir bool) (*state, error) {
	var lastErr error
	for attempt := 1; attempt <= startAttempts; attempt++ {
		sub := filepath.Join(dir, "run"+strconv.Itoa(attempt))
		st, err := launchOnce(ctx, bin, sub)
		if err == nil {
			st.dir, st.ownsDir = dir, ownsDir
			return st, nil
		}
		lastErr = err
		if !errors.Is(err, errPortInUse) || ctx.Err() != nil {
			break
		}
	}
	return nil, lastErr
}

var errPortInUse = errors.New("port in use")

// start runs kube-testenv (etcd and kube-apiserver) in its own process
// group, logging to st.logFile, killed with the test binary if that dies.
func (st *state) start(dir string, port int) error {
	args := append([]string{
		"--etcd-data-dir=" + filepath.Join(dir, "etcd"),
		"--",
	}, st.apiserverFlags(port, filepath.Join(dir, "apiserver-certs"))...)
	logf, err := os.Create(st.logFile)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(st.binary, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid: true,
		// If the test binary dies without running cleanups (e.g. go test's
		// -timeout panic), take the control plane with it.
		Pdeathsig: syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", st.binary, err)
	}
	st.cmd = cmd
	go func() {
		st.exitErr = cmd.Wait()
		close(st.exited)
	}()
	return nil
}

// launchOnce makes the PKI in dir, starts kube-testenv on a free port and
// waits until the apiserver serves; on failure it kills what it started.
func launchOnce(ctx context.Context, bin, dir string) (st *state, err error) {
	certDir := filepath.Join(dir, "pki")
	if err := os.MkdirAll(certDir, 0o700); err != nil {
		return nil, err
	}
	p, err := generatePKI(certDir)
	if err != nil {
		return nil, fmt.Errorf("generating certificates: %w", err)
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	url := "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	st = &state{
		binary:  bin,
		url:     url,
		issuer:  url,
		pki:     p,
		logFile: filepath.Join(dir, "kube-testenv.log"),
		exited:  make(chan struct{}),
	}

	if err := st.start(dir, port); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = st.kill()
		}
	}()

	st.restConfig = &rest.Config{
		Host: url,
		TLSClientConfig: rest.TLSClientConfig{
			CAData:   p.caCertPEM,
			CertData: p.adminCertPEM,
			KeyData:  p.adminKeyPEM,
		},
		QPS:     100,
		Burst:   200,
		Timeout: requestTimeout,
	}
	if err := st.waitReady(ctx); err != nil {
		return nil, err
	}
	if st.client, err = kubernetes.NewForConfig(st.restConfig); err != nil {
		return nil, err
	}
	st.kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := st.writeKubeconfig(); err != nil {
		return nil, err
	}
	return st, nil
}

// apiserverFlags are the kube-apiserver flags of an Env.
func (st *state) apiserverFlags(port int, certDir string) []string {
	return []string{
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(port),
		"--cert-dir=" + certDir,
		"--tls-cert-file=" + st.pki.servingCertFile,
		"--tls-private-key-file=" + st.pki.servingKeyFile,
		"--client-ca-file=" + st.pki.clientCAFile,
		"--authorization-mode=RBAC",
		"--service-account-issuer=" + st.issuer,
		"--service-account-key-file=" + st.pki.saPubFile,
		"--service-account-signing-key-file=" + st.pki.saKeyFile,
		"--api-audiences=" + strings.Join(st.audiences(), ","),
		"--service-cluster-ip-range=" + ServiceClusterIPRange,
		// The apiserver would publish 127.0.0.1 as the endpoint of the
		// "kubernetes" Service, which Endpoints validation rejects
		// (loopback) and which pods could not reach anyway.
		"--endpoint-reconciler-type=none",
		"--allow-privileged=true",
		"--profiling=false",
	}
}

func (st *state) audiences() []string {
	return []string{st.issuer, AudienceCastellan, AudienceIstio}
}

// waitReady polls /readyz until it answers 200, the process exits, ctx ends
// or readyTimeout passes.
func (st *state) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	rt, err := rest.TransportFor(st.restConfig)
	if err != nil {
		return err
	}
	hc := &http.Client{Transport: rt, Timeout: 5 * time.Second}
	defer hc.CloseIdleConnections()
	var last string
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, st.url+"/readyz", nil)
		if resp, err := hc.Do(req); err != nil {
			last = err.Error()
		} else {
			body := make([]byte, 4096)
			n, _ := resp.Body.Read(body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(body[:n]))
		}
		select {
		case <-st.exited:
			logTail := tail(st.logFile, 40)
			err := fmt.Errorf("kube-testenv exited before ready (%v); log tail:\n%s", st.exitErr, logTail)
			if strings.Contains(logTail, "address already in use") {
				err = fmt.Errorf("%w: %w", errPortInUse, err)
			}
			return err
		case <-ctx.Done():
			return fmt.Errorf("kube-apiserver not ready at %s after %s (last: %s); log tail:\n%s",
				st.url, readyTimeout, last, tail(st.logFile, 40))
		case <-tick.C:
		}
	}
}

func (st *state) writeKubeconfig() error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["kubetest"] = &clientcmdapi.Cluster{
		Server:                   st.url,
		CertificateAuthorityData: st.pki.caCertPEM,
	}
	cfg.AuthInfos[AdminUser] = &clientcmdapi.AuthInfo{
		ClientCertificateData: st.pki.adminCertPEM,
		ClientKeyData:         st.pki.adminKeyPEM,
	}
	cfg.Contexts["kubetest"] = &clientcmdapi.Context{
		Cluster:   "kubetest",
		AuthInfo:  AdminUser,
		Namespace: "default",
	}
	cfg.CurrentContext = "kubetest"
	return clientcmd.WriteToFile(*cfg, st.kubeconfig)
}

// RESTConfig returns a copy of the admin client configuration (a client
// certificate of user AdminUser in group system:masters).
func (e *Env) RESTConfig() *rest.Config {
	return rest.CopyConfig(e.shared.restConfig)
}

// RESTConfigWithToken returns a client configuration that trusts the
// apiserver and authenticates with the given bearer token only, e.g. a
// token from PodToken.
func (e *Env) RESTConfigWithToken(token string) *rest.Config {
	return &rest.Config{
		Host:            e.shared.url,
		TLSClientConfig: rest.TLSClientConfig{CAData: e.shared.pki.caCertPEM},
		BearerToken:     token,
		Timeout:         requestTimeout,
	}
}

// Client returns an admin clientset.
func (e *Env) Client() kubernetes.Interface { return e.shared.client }

// Kubeconfig returns the path of an admin kubeconfig file (current context
// "kubetest", namespace "default"), for kubectl or any other client.
func (e *Env) Kubeconfig() string { return e.shared.kubeconfig }

// URL returns the apiserver's base URL, https://127.0.0.1:PORT.
func (e *Env) URL() string { return e.shared.url }

// CACertPEM returns the PEM certificate of the CA that signed the
// apiserver's serving certificate (and the admin client certificate).
func (e *Env) CACertPEM() []byte { return bytes.Clone(e.shared.pki.caCertPEM) }

// Issuer returns the service-account token issuer (--service-account-issuer),
// which is the apiserver URL, so that OIDC discovery at
// Issuer()+"/.well-known/openid-configuration" works.
func (e *Env) Issuer() string { return e.shared.issuer }

// Audiences returns the apiserver's --api-audiences: Issuer(),
// AudienceCastellan and AudienceIstio.
func (e *Env) Audiences() []string { return e.shared.audiences() }

// ServiceAccountPublicKeyPEM returns the PEM (PKIX) public key that verifies
// service-account tokens.
func (e *Env) ServiceAccountPublicKeyPEM() []byte {
	b, err := os.ReadFile(e.shared.pki.saPubFile)
	if err != nil {
		e.fatalf("reading service-account public key: %v", err)
	}
	return b
}

// LogFile returns the path of the control plane's combined log.
func (e *Env) LogFile() string { return e.shared.logFile }

func (e *Env) fatalf(format string, args ...any) {
	if e.t == nil {
		panic(fmt.Sprintf("kubetest: "+format+" (Env not bound to a test; use For)", args...))
	}
	e.t.Helper()
	e.t.Fatalf("kubetest: "+format, args...)
}

func freePort() (int, error) {
	return freeport.Port()
}

// tail returns up to the last n lines of the file at path.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
