package integration_test

import (
	"bytes"
	"context"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/integration/testbin"
)

// demoChromiumFlags run Debian's chromium headless, offline and without
// state shared with anything else.
func demoChromiumFlags(profile string) []string {
	return []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + profile, "--window-size=1280,1400"}
}

// demoChromium returns chromium's path, skipping the test (or failing it
// when CASTELLAN_REQUIRE_BROWSER=1) if it is not installed.
func demoChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CASTELLAN_REQUIRE_BROWSER") == "1" {
		t.Fatal("chromium is not installed (apt-get install chromium) and CASTELLAN_REQUIRE_BROWSER=1")
	}
	t.Skip("chromium is not installed; apt-get install chromium to run the browser check")
	return ""
}

// demoBrowser loads the product page in headless Chromium, checks the
// rendered text, and saves a screenshot to integration/artifacts.
func demoBrowser(t *testing.T, d *demoLauncher) {
	chromium := demoChromium(t)
	url := d.demoURL() + "/productpage?refresh=0"
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	dom, err := exec.CommandContext(ctx, chromium, append(demoChromiumFlags(t.TempDir()), "--dump-dom", url)...).Output()
	if err != nil {
		t.Fatalf("chromium --dump-dom: %v", err)
	}
	text := string(dom)
	for _, want := range []string{"The Comedy of Errors", "Book Details", "William Shakespeare", "Book Reviews",
		"An extremely entertaining play by Shakespeare", "★★★★★", "Mutual TLS on every hop",
		"productpage → details", "reviews → ratings", "spiffe://cluster.local/ns/default/sa/bookinfo-ratings", "expires in"} {
		if !strings.Contains(text, want) {
			t.Errorf("rendered page lacks %q", want)
		}
	}
	if strings.Contains(text, `class="error"`) {
		t.Errorf("rendered page shows an error")
	}

	dir := filepath.Join(testbin.RepoRoot(), "integration", "artifacts")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(dir, "productpage.png")
	_ = os.Remove(shot)
	if out, err := exec.CommandContext(ctx, chromium, append(demoChromiumFlags(t.TempDir()), "--screenshot="+shot, url)...).CombinedOutput(); err != nil {
		t.Fatalf("chromium --screenshot: %v\n%s", err, out)
	}
	b, err := os.ReadFile(shot)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	cfg, err := png.DecodeConfig(bytes.NewReader(b))
	if err != nil || cfg.Width < 1000 || cfg.Height < 1000 {
		t.Fatalf("screenshot %s is not a full-page PNG: %v %+v", shot, err, cfg)
	}
	t.Logf("screenshot saved to %s (%dx%d)", shot, cfg.Width, cfg.Height)
}
