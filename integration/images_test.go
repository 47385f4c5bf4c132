package integration_test

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/castellan-dev/castellan/integration/testbin"
)

// The inputs of the test's image builds.
const (
	imgVersion  = "v0.0.0-imagetest"
	imgRevision = "0123456789abcdef0123456789abcdef01234567"
	imgCreated  = 1767225600 // 2026-01-01T00:00:00Z
	imgUID      = 65532
)

// imgBinaries maps each image to the file name of its entrypoint.
var imgBinaries = map[string]string{
	"castellan-server": "castellan-server", "castellan-agent": "castellan-agent", "castellanctl": "castellanctl",
	"castellan-bookinfo-productpage": "productpage", "castellan-bookinfo-details": "details",
	"castellan-bookinfo-reviews": "reviews", "castellan-bookinfo-ratings": "ratings",
}

// buildImages builds the image builder once and runs it twice into two
// directories, returning both and the digests each run printed.
func buildImages(t *testing.T) (dirs [2]string, digests [2]string) {
	t.Helper()
	root := testbin.RepoRoot()
	builder := filepath.Join(t.TempDir(), "image")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, "go", "build", "-o", builder, "./deploy/image")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./deploy/image: %v\n%s", err, out)
	}
	for i := range dirs {
		dirs[i] = filepath.Join(t.TempDir(), "images")
		cmd := exec.CommandContext(ctx, builder, "--out", dirs[i], "--version", imgVersion,
			"--revision", imgRevision, "--created", fmt.Sprint(imgCreated))
		cmd.Dir = root
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("image builder: %v\n%s", err, stderr.String())
		}
		digests[i] = string(out)
	}
	return dirs, digests
}

// requireRoot skips (or, with CASTELLAN_REQUIRE_IMAGES=1, fails) a test
// that must chroot and change uid.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CASTELLAN_REQUIRE_IMAGES") == "1" {
		t.Fatal("the image test runs entrypoints under chroot as uid 65532 and needs root; CASTELLAN_REQUIRE_IMAGES=1 forbids skipping")
	}
	t.Skip("the image test needs root (chroot, setuid); skipping (set CASTELLAN_REQUIRE_IMAGES=1 to fail instead)")
}

func TestImagesAreReproducibleMinimalAndRunAsNonroot(t *testing.T) {
	if testing.Short() {
		t.Skip("builds every image twice for two architectures")
	}
	requireRoot(t)
	dirs, digests := buildImages(t)
	if digests[0] != digests[1] {
		t.Fatalf("two builds of the same commit gave different digests:\n%s\n%s", digests[0], digests[1])
	}
	if n := strings.Count(digests[0], "sha256:"); n != len(imgBinaries) {
		t.Fatalf("builder printed %d digests, want %d:\n%s", n, len(imgBinaries), digests[0])
	}
	for name, bin := range imgBinaries {
		t.Run(name, func(t *testing.T) {
			a, b := readFile(t, filepath.Join(dirs[0], name, "index.json")), readFile(t, filepath.Join(dirs[1], name, "index.json"))
			if !bytes.Equal(a, b) {
				t.Errorf("index.json differs between two builds:\n%s\n%s", a, b)
			}
			img := amd64Image(t, filepath.Join(dirs[0], name))
			checkImageConfig(t, img, name, bin)
			root := unpack(t, img)
			checkRootFS(t, root, bin)
			runEntrypoint(t, root, name, bin)
		})
	}
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// amd64Image opens the layout's only entry, the multi-architecture index,
// checks it holds exactly linux/amd64 and linux/arm64, and returns amd64.
func amd64Image(t *testing.T, dir string) v1.Image {
	t.Helper()
	lp, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	top, err := lp.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(top.Manifests) != 1 || !top.Manifests[0].MediaType.IsIndex() {
		t.Fatalf("layout %s: want one image index entry, have %+v", dir, top.Manifests)
	}
	if ref := top.Manifests[0].Annotations["org.opencontainers.image.ref.name"]; ref != imgVersion {
		t.Errorf("layout ref.name %q, want %q", ref, imgVersion)
	}
	idx, err := lp.ImageIndex(top.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var plats []string
	var amd64 v1.Hash
	for _, d := range im.Manifests {
		plats = append(plats, d.Platform.OS+"/"+d.Platform.Architecture)
		if d.Platform.Architecture == "amd64" {
			amd64 = d.Digest
		}
	}
	if !slices.Equal(plats, []string{"linux/amd64", "linux/arm64"}) {
		t.Fatalf("index platforms %v, want linux/amd64 and linux/arm64", plats)
	}
	img, err := idx.Image(amd64)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func checkImageConfig(t *testing.T, img v1.Image, name, bin string) {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	if c.User != "65532:65532" {
		t.Errorf("config User %q, want 65532:65532", c.User)
	}
	if want := []string{"/usr/local/bin/" + bin}; !slices.Equal(c.Entrypoint, want) || len(c.Cmd) != 0 || len(c.Shell) != 0 {
		t.Errorf("config Entrypoint %q Cmd %q Shell %q, want entrypoint %q and no cmd or shell", c.Entrypoint, c.Cmd, c.Shell, want)
	}
	if cf.OS != "linux" || cf.Architecture != "amd64" || !cf.Created.Time.Equal(time.Unix(imgCreated, 0)) {
		t.Errorf("config os/arch/created %s/%s/%v", cf.OS, cf.Architecture, cf.Created.Time)
	}
	for k, want := range map[string]string{
		"org.opencontainers.image.source":   "https://github.com/castellan-dev/castellan",
		"org.opencontainers.image.revision": imgRevision,
		"org.opencontainers.image.version":  imgVersion,
		"org.opencontainers.image.created":  "2026-01-01T00:00:00Z",
		"org.opencontainers.image.title":    name,
	} {
		if got := c.Labels[k]; got != want {
			t.Errorf("label %s = %q, want %q", k, got, want)
		}
	}
}

// unpack extracts the image's flattened file system into a new directory,
// refusing anything but plain directories and regular files.
func unpack(t *testing.T, img v1.Image) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "rootfs")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return root
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(root, filepath.Clean("/"+h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(p, os.FileMode(h.Mode).Perm())
		case tar.TypeReg:
			err = writeFileFrom(p, tr, os.FileMode(h.Mode).Perm())
		default:
			t.Fatalf("image holds %s of tar type %q; want only directories and files", h.Name, h.Typeflag)
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Uid != 0 || h.Gid != 0 {
			t.Errorf("%s owned by %d:%d, want root", h.Name, h.Uid, h.Gid)
		}
	}
}

func writeFileFrom(p string, r io.Reader, mode os.FileMode) error {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// checkRootFS checks that the root file system holds exactly the users, the
// CA certificates and a static binary: no shell, nothing else.
func checkRootFS(t *testing.T, root, bin string) {
	t.Helper()
	var got []string
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		got = append(got, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"etc", "etc/group", "etc/passwd", "etc/ssl", "etc/ssl/certs", "etc/ssl/certs/ca-certificates.crt",
		"usr", "usr/local", "usr/local/bin", "usr/local/bin/" + bin}
	if !slices.Equal(got, want) {
		t.Errorf("root file system holds %q, want exactly %q", got, want)
	}
	for _, sh := range []string{"bin/sh", "bin/bash", "bin/busybox"} {
		if _, err := os.Lstat(filepath.Join(root, sh)); err == nil {
			t.Errorf("image has a shell: /%s", sh)
		}
	}
	if passwd := string(readFile(t, filepath.Join(root, "etc/passwd"))); !strings.Contains(passwd, fmt.Sprintf("nonroot:x:%d:%d:", imgUID, imgUID)) {
		t.Errorf("/etc/passwd names no user %d:\n%s", imgUID, passwd)
	}
	if !bytes.Contains(readFile(t, filepath.Join(root, "etc/ssl/certs/ca-certificates.crt")), []byte("BEGIN CERTIFICATE")) {
		t.Error("ca-certificates.crt holds no certificate")
	}
	f, err := elf.Open(filepath.Join(root, "usr/local/bin", bin))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("%s is dynamically linked (program header %v); it cannot run without libc", bin, p.Type)
		}
	}
	if f.Machine != elf.EM_X86_64 {
		t.Errorf("%s is for %v, want x86-64", bin, f.Machine)
	}
}

// chrootCmd runs the image's entrypoint from the unpacked root as uid and
// gid 65532, the way a container runtime would (minus the namespaces).
func chrootCmd(ctx context.Context, root, bin string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "/usr/local/bin/"+bin, args...)
	cmd.Path = "/usr/local/bin/" + bin // resolved inside the chroot
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/local/bin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Chroot:     root,
		Credential: &syscall.Credential{Uid: imgUID, Gid: imgUID, Groups: []uint32{}},
		Setpgid:    true,
	}
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

func runEntrypoint(t *testing.T, root, name, bin string) {
	t.Helper()
	if name == "castellan-server" {
		runServerImage(t, root)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args, want := []string{"--version"}, fmt.Sprintf("%s %s (commit %s, go", name, imgVersion, imgRevision)
	if strings.HasPrefix(name, "castellan-bookinfo-") {
		// The Bookinfo services have no --version; -h prints their flags.
		args, want = []string{"-h"}, "-socket"
	}
	var out bytes.Buffer
	cmd := chrootCmd(ctx, root, bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %v in the image's root as uid %d: %v\n%s", bin, args, imgUID, err, out.String())
	}
	if !strings.Contains(out.String(), want) {
		t.Errorf("%s %v printed %q, want it to contain %q", bin, args, out.String(), want)
	}
}

// runServerImage starts the CA from the image's root as uid 65532 with a
// data directory standing in for the volume, waits for /healthz, and
// checks from /proc that it runs as 65532 inside the root.
func runServerImage(t *testing.T, root string) {
	t.Helper()
	data := filepath.Join(root, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(data, imgUID, imgUID); err != nil {
		t.Fatal(err)
	}
	httpAddr := freeAddr(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var log agentLog
	cmd := chrootCmd(ctx, root, "castellan-server", "--data-dir", "/data",
		"--listen", freeAddr(t), "--http-listen", httpAddr)
	cmd.Stderr = &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	agentEventually(t, 60*time.Second, "castellan-server /healthz from the image", func() bool {
		resp, err := http.Get("http://" + httpAddr + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	status := string(readFile(t, fmt.Sprintf("/proc/%d/status", cmd.Process.Pid)))
	for _, field := range []string{"Uid:", "Gid:"} {
		want := fmt.Sprintf("%s\t%d\t%d\t%d\t%d", field, imgUID, imgUID, imgUID, imgUID)
		if !strings.Contains(status, want) {
			t.Errorf("server process status lacks %q:\n%s", want, status)
		}
	}
	if got, err := os.Readlink(fmt.Sprintf("/proc/%d/root", cmd.Process.Pid)); err != nil || got != root {
		t.Errorf("server process root %q (%v), want %s", got, err, root)
	}
	if _, err := os.Stat(filepath.Join(data, "bundle.pem")); err != nil {
		t.Errorf("server wrote no bundle.pem into its data directory: %v\n%s", err, log.String())
	}
}
