// Command image builds Castellan's OCI images in pure Go: no container
// engine, nothing pulled. Each image is one static Go binary on a minimal
// root file system (CA certificates, /etc/passwd and /etc/group naming the
// non-root user 65532, nothing else: no shell), for linux/amd64 and
// linux/arm64, written as an OCI image layout under --out with the
// multi-architecture image index as its only entry.
//
// It is a build tool run by "make images", not a shipped binary. It lives in
// deploy/ beside the manifests and the chart that name the images it makes.
//
// The same commit built twice gives the same digests: binaries are built
// with -trimpath, no VCS stamping and no build ID; every file in a layer has
// the fixed time --created (SOURCE_DATE_EPOCH, by default the commit time)
// and owner root; the config's created time is the same. The CA
// certificates are read from the build machine (--ca-certificates), so a
// different certificate store gives a different base layer.
//
// Push with crane (go-containerregistry's CLI, from the Go module proxy):
//
//	go run github.com/google/go-containerregistry/cmd/crane@v0.22.1 \
//	    push bin/images/castellan-server REGISTRY/castellan-server:TAG
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// options are the builder's inputs, read once from flags.
type options struct {
	out       string
	version   string
	revision  string
	source    string
	created   time.Time
	caCerts   string
	platforms []platform
	only      []string
	goCmd     string
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	opts, err := parseFlags(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(2)
	}
	if err := run(ctx, opts, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string, getenv func(string) string, out io.Writer) (options, error) {
	var o options
	var created, platforms, only string
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&o.out, "out", "bin/images", "directory to write one OCI image layout per image into (each replaced)")
	fs.StringVar(&o.version, "version", "", "version stamped into the binaries and the org.opencontainers.image.version label (required)")
	fs.StringVar(&o.revision, "revision", "", "source commit, for the org.opencontainers.image.revision label and --version output (required)")
	fs.StringVar(&o.source, "source", "https://github.com/castellan-dev/castellan", "org.opencontainers.image.source label")
	fs.StringVar(&created, "created", getenv("SOURCE_DATE_EPOCH"), "image creation time and file times, Unix seconds (default $SOURCE_DATE_EPOCH; make images passes the commit time)")
	fs.StringVar(&o.caCerts, "ca-certificates", "/etc/ssl/certs/ca-certificates.crt", "PEM CA certificates copied to /etc/ssl/certs/ca-certificates.crt in every image")
	fs.StringVar(&platforms, "platforms", "linux/amd64,linux/arm64", "comma-separated os/arch list")
	fs.StringVar(&only, "only", "", "comma-separated image names to build (default: all)")
	fs.StringVar(&o.goCmd, "go", "go", "the go command used to build the binaries")
	if err := fs.Parse(args); err != nil {
		return options{}, err
	}
	if fs.NArg() > 0 {
		return options{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.version == "" || o.revision == "" {
		return options{}, errors.New("--version and --revision are required (make images passes git describe and the commit)")
	}
	secs, err := strconv.ParseInt(created, 10, 64)
	if err != nil || secs < 0 {
		return options{}, fmt.Errorf("--created %q: want Unix seconds (e.g. SOURCE_DATE_EPOCH=$(git log -1 --format=%%ct))", created)
	}
	o.created = time.Unix(secs, 0).UTC()
	if o.platforms, err = parsePlatforms(platforms); err != nil {
		return options{}, err
	}
	if only != "" {
		o.only = strings.Split(only, ",")
	}
	return o, nil
}
