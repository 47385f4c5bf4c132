// Command podcheck is the workload of the cluster harness's own tests: run
// in a pod, it prints what the kubelet and containerd gave it — its cgroup,
// its user, the claims of a projected service-account token — one
// "podcheck: key=value" line each, then waits for SIGTERM.
//
// Usage: podcheck [token file]
package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
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
	if len(os.Args) > 1 {
		printToken(os.Args[1])
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
