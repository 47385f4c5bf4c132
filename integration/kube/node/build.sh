#!/usr/bin/env bash
# Builds the kube-node binary (kubelet, kube-scheduler, kube-controller-manager
# and kube-proxy from k8s.io/kubernetes v1.34.4, one multi-call binary) used by
# Castellan's real-cluster tests (integration/cluster), and prints its
# absolute path on stdout (progress goes to stderr).
#
# Idempotent: if the binary exists and is newer than this module's go.mod,
# go.sum, main.go and this script, nothing is built.
#
# Output: ${CASTELLAN_KUBE_NODE:-${CASTELLAN_CACHE:-$HOME/.cache/castellan}/bin/kube-node}
# Measured on a 2-core machine busy with other builds (load 8-11): 18 minutes
# from an empty build cache (module cache present), 6 minutes with
# kube-testenv's packages already in the build cache.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../../cachebuild.sh
source "$here/../../cachebuild.sh"
out="$(cachebuild_out CASTELLAN_KUBE_NODE kube-node)"

if ! cachebuild_fresh "$out" "$here/go.mod" "$here/go.sum" "$here/main.go" "$here/build.sh"; then
	# Stamp the version as the upstream release build does (the kubelet
	# reports it in the Node status).
	ldflags=""
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ldflags+=" -X $pkg.gitMajor=1 -X $pkg.gitMinor=34 -X $pkg.gitVersion=v1.34.4"
		ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
	done
	cachebuild_module kube-node "$out" "$here" "$ldflags"
fi
echo "$out"
