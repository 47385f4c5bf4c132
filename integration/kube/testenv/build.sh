#!/usr/bin/env bash
# Builds the kube-testenv binary (embedded etcd + kube-apiserver + kubectl,
# Kubernetes v1.34.4) used by Castellan's Kubernetes integration tests, and
# prints its absolute path on stdout (progress goes to stderr).
#
# Idempotent: if the binary exists and is newer than this module's go.mod,
# go.sum, main.go and this script, nothing is built.
#
# Output: ${CASTELLAN_KUBE_TESTENV:-${CASTELLAN_CACHE:-$HOME/.cache/castellan}/bin/kube-testenv}
# The first build takes about 11 minutes on a 2-core machine.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../../cachebuild.sh
source "$here/../../cachebuild.sh"
out="$(cachebuild_out CASTELLAN_KUBE_TESTENV kube-testenv)"

if ! cachebuild_fresh "$out" "$here/go.mod" "$here/go.sum" "$here/main.go" "$here/build.sh"; then
	# Stamp the Kubernetes version as the upstream release build does, so
	# /version and "kubectl version" report v1.34.4 instead of v0.0.0-master.
	ldflags=""
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ldflags+=" -X $pkg.gitMajor=1 -X $pkg.gitMinor=34 -X $pkg.gitVersion=v1.34.4"
		ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
	done
	cachebuild_module kube-testenv "$out" "$here" "$ldflags"
fi
echo "$out"
