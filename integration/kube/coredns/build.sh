#!/usr/bin/env bash
# Builds kube-coredns (CoreDNS v1.13.2 with the plugins a test cluster's DNS
# needs, see main.go), the cluster DNS of Castellan's real-cluster tests
# (integration/cluster), and prints its absolute path on stdout (progress
# goes to stderr).
#
# Idempotent: if the binary exists and is newer than this module's go.mod,
# go.sum, main.go and this script, nothing is built.
#
# Output: ${CASTELLAN_KUBE_COREDNS:-${CASTELLAN_CACHE:-$HOME/.cache/castellan}/bin/kube-coredns}
# Measured on a 2-core machine busy with other builds: about 6 minutes from a
# build cache without CoreDNS's dependencies, under 2 minutes with the Go
# standard library and the shared dependencies cached.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../../cachebuild.sh
source "$here/../../cachebuild.sh"
out="$(cachebuild_out CASTELLAN_KUBE_COREDNS kube-coredns)"

if ! cachebuild_fresh "$out" "$here/go.mod" "$here/go.sum" "$here/main.go" "$here/build.sh"; then
	ldflags="-X github.com/coredns/coredns/coremain.GitCommit=v1.13.2"
	cachebuild_module kube-coredns "$out" "$here" "$ldflags"
fi
echo "$out"
