// Command podcheck is the workload of the cluster harness's own tests: run
// in a pod, it prints what the kubelet and containerd gave it — its cgroup,
// its user, the claims of a projected service-account token — one
// "podcheck: key=value" line each — and, with --api, the apiserver's version
// read through the "kubernetes" Service by its DNS name with the pod's
// default token (cluster DNS, kube-proxy and the token mount at once);
// then it waits for SIGTERM.
//
// Usage: podcheck [--api] [token file]
package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	fmt.Printf("podcheck: uid=%d\n", os.Getuid())
	if b, err := os.ReadFile("/proc/self/cgroup"); err == nil {
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if strings.Contains(line, ":memory:") {
				fmt.Printf("podcheck: cgroup=%s\n", line[strings.LastIndexByte(line, ':')+1:])
			}
		}
	}
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "--api" {
		printAPIVersion()
		args = args[1:]
	}
	if len(args) > 0 {
		printToken(args[0])
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	fmt.Println("podcheck: stopping")
}

// printToken prints the subject and audiences of a JWT (not verified: the
// test verifies them against the apiserver's view).
func printToken(path string) {
	raw, err := os.ReadFile(path)
	if err != nil {
		fmt.Printf("podcheck: token-error=%v\n", err)
		return
	}
	parts := strings.Split(strings.TrimSpace(string(raw)), ".")
	if len(parts) != 3 {
		fmt.Println("podcheck: token-error=not a JWT")
		return
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		fmt.Printf("podcheck: token-error=%v\n", err)
		return
	}
	var claims struct {
		Sub string   `json:"sub"`
		Aud []string `json:"aud"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		fmt.Printf("podcheck: token-error=%v\n", err)
		return
	}
	fmt.Printf("podcheck: token-sub=%s\npodcheck: token-aud=%s\n", claims.Sub, strings.Join(claims.Aud, ","))
}

// printAPIVersion GETs https://kubernetes.default.svc/version with the
// pod's service-account credentials, retrying for up to 30 s while the
// Service's rules are being programmed.
func printAPIVersion() {
	const sa = "/var/run/secrets/kubernetes.io/serviceaccount/"
	ca, err1 := os.ReadFile(sa + "ca.crt")
	token, err2 := os.ReadFile(sa + "token")
	if err1 != nil || err2 != nil {
		fmt.Printf("podcheck: api-error=%v %v\n", err1, err2)
		return
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	var last error
	for range 30 {
		req, _ := http.NewRequest(http.MethodGet, "https://kubernetes.default.svc/version", nil)
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
		resp, err := hc.Do(req)
		if err == nil {
			var v struct {
				GitVersion string `json:"gitVersion"`
			}
			err = json.NewDecoder(resp.Body).Decode(&v)
			resp.Body.Close()
			if err == nil && resp.StatusCode == http.StatusOK {
				fmt.Printf("podcheck: api-version=%s\n", v.GitVersion)
				return
			}
			if err == nil {
				err = fmt.Errorf("HTTP %d", resp.StatusCode)
			}
		}
		last = err
		time.Sleep(time.Second)
	}
	fmt.Printf("podcheck: api-error=%v\n", last)
}
