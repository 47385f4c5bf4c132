#!/usr/bin/env bash
# Builds SPIRE's own agent CLI (github.com/spiffe/spire v1.13.3, unmodified)
# used by Castellan's interop test (integration/spire_test.go runs
# "spire-agent api fetch x509" against castellan-agent), and prints its
# absolute path on stdout (progress goes to stderr).
#
# SPIRE is built from this separate module so that it never enters
# Castellan's own go.mod.
#
# Idempotent: if the binary exists and is newer than this module's go.mod,
# go.sum, main.go and this script, nothing is built.
#
# Output: ${CASTELLAN_SPIRE_AGENT:-${CASTELLAN_CACHE:-$HOME/.cache/castellan}/bin/spire-agent}
# The first build takes about 3 minutes on a 2-core machine (plus ~30 s of module downloads).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_bin="${CASTELLAN_CACHE:-$HOME/.cache/castellan}/bin"
out="${CASTELLAN_SPIRE_AGENT:-$cache_bin/spire-agent}"

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
	echo "spire-agent: building $out (first build takes ~3 min)..." >&2
	start=$SECONDS
	tmp="$out.tmp.$$"
	trap 'rm -f "$tmp"' EXIT
	# Build into a temp file and rename, so an interrupted build never leaves
	# a half-written binary that looks up to date. Stamp the release version
	# as SPIRE's own build does, so "spire-agent --version" reports 1.13.3.
	ldflags="-X github.com/spiffe/spire/pkg/common/version.gittag=1.13.3"
	(cd "$here" && GOWORK=off GOFLAGS="${GOFLAGS:-} -mod=readonly" go build -trimpath -ldflags="$ldflags" -o "$tmp" .)
	mv -f "$tmp" "$out"
	trap - EXIT
	echo "spire-agent: built in $((SECONDS - start))s" >&2
fi
echo "$out"
