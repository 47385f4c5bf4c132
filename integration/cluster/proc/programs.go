package proc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Binaries are the programs the cluster runs.
type Binaries struct {
	Testenv, Node, CoreDNS string // kube-testenv, kube-node, kube-coredns: from the build cache
	Containerd             string
	Ctr                    string
	IP                     string
	IPTables               string
	IP6Tables              string
}

// debianPackages maps each host program to the Debian package that has it.
var debianPackages = map[string]string{
	"containerd":              "containerd",
	"ctr":                     "containerd",
	"containerd-shim-runc-v2": "containerd",
	"runc":                    "runc",
	"/usr/lib/cni/bridge":     "containernetworking-plugins",
	"iptables":                "iptables",
	"ip6tables":               "iptables",
	"conntrack":               "conntrack",
	"ip":                      "iproute2",
}

// FindBinaries locates every program, installing missing Debian packages
// with apt-get (the cluster runs as root).
func FindBinaries() (Binaries, error) {
	var b Binaries
	if os.Geteuid() != 0 {
		return b, errors.New("a real cluster needs root (containers, mounts, cgroups, iptables)")
	}
	if err := ensurePackages(); err != nil {
		return b, err
	}
	var err error
	if b.Testenv, err = cachedBinary("CASTELLAN_KUBE_TESTENV", "kube-testenv", "integration/kube/testenv/build.sh"); err != nil {
		return b, err
	}
	if b.Node, err = cachedBinary("CASTELLAN_KUBE_NODE", "kube-node", "integration/kube/node/build.sh"); err != nil {
		return b, err
	}
	if b.CoreDNS, err = cachedBinary("CASTELLAN_KUBE_COREDNS", "kube-coredns", "integration/kube/coredns/build.sh"); err != nil {
		return b, err
	}
	for _, x := range []struct {
		dst  *string
		name string
	}{{&b.Containerd, "containerd"}, {&b.Ctr, "ctr"}, {&b.IP, "ip"}, {&b.IPTables, "iptables"}, {&b.IP6Tables, "ip6tables"}} {
		if *x.dst, err = lookPath(x.name); err != nil {
			return b, err
		}
	}
	return b, nil
}

// ensurePackages installs the Debian packages of missing programs.
func ensurePackages() error {
	var missing []string
	seen := map[string]bool{}
	for prog, pkg := range debianPackages {
		if _, err := lookPath(prog); err == nil || seen[pkg] {
			continue
		}
		seen[pkg] = true
		missing = append(missing, pkg)
	}
	if len(missing) == 0 {
		return nil
	}
	env := []string{"DEBIAN_FRONTEND=noninteractive"}
	if out, err := runEnv(10*time.Minute, env, "apt-get", "update", "-qq"); err != nil {
		return fmt.Errorf("installing %v: %w\n%s", missing, err, out)
	}
	args := append([]string{"install", "-y", "-qq", "--no-install-recommends"}, missing...)
	if out, err := runEnv(10*time.Minute, env, "apt-get", args...); err != nil {
		return fmt.Errorf("installing %v: %w\n%s", missing, err, out)
	}
	return nil
}

// lookPath finds a program in PATH or the sbin directories (which a
// non-login root shell may lack); an absolute name is checked as is.
func lookPath(name string) (string, error) {
	if filepath.IsAbs(name) {
		if _, err := os.Stat(name); err != nil {
			return "", err
		}
		return name, nil
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/local/sbin", "/usr/sbin", "/sbin"} {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in PATH or the sbin directories", name)
}

// cachedBinary returns $env, else ${CASTELLAN_CACHE:-~/.cache/castellan}/bin/name.
func cachedBinary(env, name, script string) (string, error) {
	path := os.Getenv(env)
	if path == "" {
		cache := os.Getenv("CASTELLAN_CACHE")
		if cache == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return "", err
			}
			cache = filepath.Join(home, ".cache", "castellan")
		}
		path = filepath.Join(cache, "bin", name)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode()&0o111 == 0 {
		return "", fmt.Errorf("%s not found at %s: build it with %s (or set %s)", name, path, script, env)
	}
	return path, nil
}

// childEnv is the environment of the components: the test's, with the
// sbin directories on PATH (containerd runs runc, the kubelet iptables).
func childEnv() []string {
	env := os.Environ()
	for i, kv := range env {
		if strings.HasPrefix(kv, "PATH=") {
			env[i] = kv + ":/usr/local/sbin:/usr/sbin:/sbin"
			return env
		}
	}
	return append(env, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
}

// Poll calls cond every interval until it returns true or an error, or ctx
// ends.
func Poll(ctx context.Context, interval time.Duration, cond func() (bool, error)) error {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not ready: %w", ctx.Err())
		case <-tick.C:
		}
	}
}
