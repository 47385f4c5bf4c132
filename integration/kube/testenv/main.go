// Command kube-testenv runs a real, single-process Kubernetes control plane
// for Castellan's integration tests: an embedded etcd (the same etcd server
// release that Kubernetes v1.34.4 is built against) plus the real
// kube-apiserver from k8s.io/kubernetes v1.34.4. It also embeds kubectl, so
// tests need no separate download. Nothing it starts listens anywhere but
// 127.0.0.1.
//
// Usage:
//
//	kube-testenv [testenv flags] -- [kube-apiserver flags]
//	kube-testenv kubectl [kubectl args]
//	kube-testenv version
//
// The first form starts etcd and, once etcd is ready, the kube-apiserver with
// the given flags; everything after "--" is passed to kube-apiserver verbatim
// (run "kube-testenv -- --help" for the full list). Unless the apiserver flags
// already contain --etcd-servers, kube-testenv appends
// --etcd-servers=http://127.0.0.1:<etcd-client-port>. The process exits when
// the apiserver exits (or on SIGINT/SIGTERM, which the apiserver handles);
// etcd dies with it. Testenv flags:
//
//	--etcd-data-dir DIR       etcd data directory (required; created if missing)
//	--etcd-client-port N      etcd client port on 127.0.0.1 (0: pick a free one)
//	--etcd-peer-port N        etcd peer port on 127.0.0.1 (0: pick a free one)
//	--etcd-log-level LEVEL    etcd zap log level (default "error")
//	--etcd-unsafe-no-fsync    skip fsync in etcd (default true; test data only)
//	--etcd-ready-timeout D    how long to wait for etcd to become ready (default 60s)
//
// The second form runs kubectl v1.34.4 (including "kubectl kustomize") with
// the remaining arguments, exactly like a standalone kubectl binary.
package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
	_ "time/tzdata" // for timeZone support in CronJob, as in the upstream main

	"go.etcd.io/etcd/server/v3/embed"

	_ "k8s.io/client-go/plugin/pkg/client/auth" // client auth plugins, as in upstream kubectl
	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	_ "k8s.io/component-base/logs/json/register"          // JSON log format, as in upstream kube-apiserver
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics, as in upstream kube-apiserver
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric, as in upstream kube-apiserver
	kubectlcmd "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

const loopback = "127.0.0.1"

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "kubectl":
			runKubectl()
			return
		case "version":
			fmt.Println("kube-testenv: kube-apiserver/kubectl v1.34.4, etcd v3.6.4")
			return
		}
	}
	os.Exit(runControlPlane(os.Args[1:]))
}

// runKubectl behaves exactly like the upstream cmd/kubectl main, with
// os.Args shifted so that kubectl sees itself as argv[0].
func runKubectl() {
	os.Args = os.Args[1:]
	logs.GlogSetter(kubectlcmd.GetLogVerbosity(os.Args)) //nolint:errcheck
	command := kubectlcmd.NewDefaultKubectlCommand()
	if err := cli.RunNoErrOutput(command); err != nil {
		kubectlutil.CheckErr(err)
	}
}

// runControlPlane starts etcd, then the kube-apiserver, and returns the exit
// code for the process.
func runControlPlane(args []string) int {
	fs := flag.NewFlagSet("kube-testenv", flag.ContinueOnError)
	dataDir := fs.String("etcd-data-dir", "", "etcd data directory (required)")
	clientPort := fs.Int("etcd-client-port", 0, "etcd client port on 127.0.0.1 (0: pick a free one)")
	peerPort := fs.Int("etcd-peer-port", 0, "etcd peer port on 127.0.0.1 (0: pick a free one)")
	logLevel := fs.String("etcd-log-level", "error", "etcd log level")
	noFsync := fs.Bool("etcd-unsafe-no-fsync", true, "skip fsync in etcd (test data only)")
	readyTimeout := fs.Duration("etcd-ready-timeout", 60*time.Second, "how long to wait for etcd to become ready")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: kube-testenv [testenv flags] -- [kube-apiserver flags]")
		fmt.Fprintln(fs.Output(), "       kube-testenv kubectl [kubectl args]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	apiserverArgs := fs.Args()
	if *dataDir == "" {
		fmt.Fprintln(os.Stderr, "kube-testenv: --etcd-data-dir is required")
		fs.Usage()
		return 2
	}

	etcd, clientURL, err := startEtcd(*dataDir, *clientPort, *peerPort, *logLevel, *noFsync, *readyTimeout)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kube-testenv: starting etcd: %v\n", err)
		return 1
	}
	defer etcd.Close()
	go func() {
		// etcd failing underneath a running apiserver makes every test
		// meaningless; exit loudly instead of serving errors.
		if err, ok := <-etcd.Err(); ok && err != nil {
			fmt.Fprintf(os.Stderr, "kube-testenv: etcd failed: %v\n", err)
			os.Exit(1)
		}
	}()
	fmt.Fprintf(os.Stderr, "kube-testenv: etcd ready at %s\n", clientURL)

	if !hasFlag(apiserverArgs, "etcd-servers") {
		apiserverArgs = append(apiserverArgs, "--etcd-servers="+clientURL)
	}
	command := app.NewAPIServerCommand()
	command.SetArgs(apiserverArgs)
	return cli.Run(command)
}

// startEtcd starts a single-member embedded etcd on loopback and waits until
// it is ready to serve clients.
func startEtcd(dir string, clientPort, peerPort int, logLevel string, noFsync bool, timeout time.Duration) (*embed.Etcd, string, error) {
	var err error
	if clientPort == 0 {
		if clientPort, err = freePort(); err != nil {
			return nil, "", err
		}
	}
	if peerPort == 0 {
		if peerPort, err = freePort(); err != nil {
			return nil, "", err
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, "", err
	}
	clientURL := url.URL{Scheme: "http", Host: net.JoinHostPort(loopback, strconv.Itoa(clientPort))}
	peerURL := url.URL{Scheme: "http", Host: net.JoinHostPort(loopback, strconv.Itoa(peerPort))}

	cfg := embed.NewConfig()
	cfg.Name = "kube-testenv"
	cfg.Dir = dir
	cfg.ListenClientUrls = []url.URL{clientURL}
	cfg.AdvertiseClientUrls = []url.URL{clientURL}
	cfg.ListenPeerUrls = []url.URL{peerURL}
	cfg.AdvertisePeerUrls = []url.URL{peerURL}
	cfg.InitialCluster = cfg.Name + "=" + peerURL.String()
	cfg.LogLevel = logLevel
	cfg.UnsafeNoFsync = noFsync

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, "", err
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, clientURL.String(), nil
	case err := <-e.Err():
		e.Close()
		return nil, "", err
	case <-time.After(timeout):
		e.Server.Stop()
		e.Close()
		return nil, "", fmt.Errorf("etcd not ready after %s", timeout)
	}
}

// freePort asks the kernel for a free TCP port on loopback.
func freePort() (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(loopback, "0"))
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// hasFlag reports whether args contain --name or --name=value.
func hasFlag(args []string, name string) bool {
	for _, a := range args {
		if a == "--"+name || strings.HasPrefix(a, "--"+name+"=") {
			return true
		}
	}
	return false
}
