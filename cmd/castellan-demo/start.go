package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// startAll brings up the CA, the agent and Bookinfo, in that order, and
// returns once the product page is served end to end.
func startAll(ctx context.Context, cfg config, l layout, bins binaries, sup *supervisor) error {
	fmt.Println("starting castellan-server ...")
	if _, err := sup.start("castellan-server", bins.server, append([]string{
		"--data-dir", l.serverData, "--listen", cfg.serverAddr, "--http-listen", cfg.serverHTTP,
		"--trust-domain", cfg.trustDomain, "--default-ttl", cfg.ttl.String()}, cfg.serverArgs...)...); err != nil {
		return err
	}
	if err := waitFor(ctx, sup, cfg.readyTimeout, "castellan-server", func() error {
		if err := fileReady(l.bundle); err != nil {
			return err
		}
		return socketReady(l.adminSocket)
	}); err != nil {
		return err
	}
	// The token goes from castellanctl straight to a 0600 file that the
	// agent reads and deletes once spent: never on a command line.
	if err := ctl(ctx, bins.ctl, l.adminSocket, "token", "create", "--node", nodeName, "--ttl", "10m", "--out", l.joinToken); err != nil {
		return err
	}
	// Each service by its executable and by the user the demo runs it as:
	// a path alone would let any local user obtain the identity.
	uid := "unix:uid:" + strconv.Itoa(os.Getuid())
	for _, svc := range bookinfoServices {
		if err := ctl(ctx, bins.ctl, l.adminSocket, "entry", "create",
			"--spiffe-id", "spiffe://"+cfg.trustDomain+"/ns/default/sa/bookinfo-"+svc,
			"--node", nodeName, "--selector", "unix:path:"+bins.bookinfo[svc], "--selector", uid); err != nil {
			return err
		}
	}
	fmt.Println("starting castellan-agent ...")
	if _, err := sup.start("castellan-agent", bins.agent, append([]string{
		"--server-address", cfg.serverAddr, "--trust-bundle", l.bundle, "--join-token-file", l.joinToken,
		"--data-dir", l.agentData, "--socket", l.agentSocket, "--http-listen", cfg.agentHTTP,
		"--trust-domain", cfg.trustDomain}, cfg.agentArgs...)...); err != nil {
		return err
	}
	if err := waitFor(ctx, sup, cfg.readyTimeout, "castellan-agent", func() error { return socketReady(l.agentSocket) }); err != nil {
		return err
	}
	fmt.Println("starting Bookinfo: ratings, reviews", strings.Join(cfg.reviews, " "), ", details, productpage ...")
	if err := startBookinfo(cfg, l, bins, sup); err != nil {
		return err
	}
	return waitFor(ctx, sup, cfg.readyTimeout, "Bookinfo", func() error { return bookinfoReady(cfg) })
}

func startBookinfo(cfg config, l layout, bins binaries, sup *supervisor) error {
	common := []string{"--socket", l.agentSocket, "--trust-domain", cfg.trustDomain}
	ratingsURL := "https://" + cfg.port(2)
	if _, err := sup.start("ratings", bins.bookinfo["ratings"], append(common, "--listen", cfg.port(2))...); err != nil {
		return err
	}
	var reviewsURLs []string
	for _, v := range cfg.reviews {
		addr, _ := cfg.reviewsPort(v) // validated
		reviewsURLs = append(reviewsURLs, "https://"+addr)
		if _, err := sup.start("reviews-"+v, bins.bookinfo["reviews"],
			append(common, "--version", v, "--listen", addr, "--ratings", ratingsURL)...); err != nil {
			return err
		}
	}
	if _, err := sup.start("details", bins.bookinfo["details"], append(common, "--listen", cfg.port(1))...); err != nil {
		return err
	}
	_, err := sup.start("productpage", bins.bookinfo["productpage"], append(common, "--listen", cfg.port(0),
		"--details", "https://"+cfg.port(1), "--reviews", strings.Join(reviewsURLs, ","))...)
	return err
}

// bookinfoReady requires the details hop and, once per reviews instance
// (productpage calls them in turn), the reviews hop to answer 200 through
// productpage, with stars from ratings in every version that shows them.
func bookinfoReady(cfg config) error {
	client := &http.Client{Timeout: 5 * time.Second}
	base := "http://" + cfg.port(0)
	if err := httpOK(client, base+"/api/v1/products/0"); err != nil {
		return err
	}
	for range cfg.reviews {
		resp, err := client.Get(base + "/api/v1/products/0/reviews")
		if err != nil {
			return err
		}
		var body struct {
			Version string
			Reviews []struct {
				Rating *struct{ Stars int }
			}
		}
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || err != nil {
			return fmt.Errorf("reviews through productpage: %s %v", resp.Status, err)
		}
		for _, r := range body.Reviews {
			if body.Version != "v1" && (r.Rating == nil || r.Rating.Stars == 0) {
				return fmt.Errorf("reviews %s has no stars from ratings yet", body.Version)
			}
		}
	}
	return nil
}

func ctl(ctx context.Context, ctlPath, adminSocket string, args ...string) error {
	_, err := ctlOutput(ctx, ctlPath, adminSocket, args...)
	return err
}

func ctlOutput(ctx context.Context, ctlPath, adminSocket string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, ctlPath, append([]string{"--admin-socket", adminSocket}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("castellan-demo: castellanctl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}
