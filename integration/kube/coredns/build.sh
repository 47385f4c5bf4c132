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
cache_bin="${CASTELLAN_CACHE:-$HOME/.cache/castellan}/bin"
out="${CASTELLAN_KUBE_COREDNS:-$cache_bin/kube-coredns}"

up_to_date() {
	[[ -x "$out" ]] || return 1
	local f
	for f in "$here/go.mod" "$here/go.sum" "$here/main.go" "$here/build.sh"; do
		[[ "$out" -nt "$f" ]] || return 1
	done
	return 0
}

if ! up_to_date; then
	mkdir -p "$(dirname "$out")"
	echo "kube-coredns: building $out..." >&2
	start=$SECONDS
	tmp="$out.tmp.$$"
	trap 'rm -f "$tmp"' EXIT
	# Build into a temp file and rename, so an interrupted build never leaves
	# a half-written binary that looks up to date.
	ldflags="-X github.com/coredns/coredns/coremain.GitCommit=v1.13.2"
	(cd "$here" && GOWORK=off GOFLAGS="${GOFLAGS:-} -mod=readonly" go build -trimpath -ldflags="$ldflags" -o "$tmp" .)
	mv -f "$tmp" "$out"
	trap - EXIT
	echo "kube-coredns: built in $((SECONDS - start))s" >&2
fi
echo "$out"
