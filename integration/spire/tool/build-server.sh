#!/usr/bin/env bash
# Builds SPIRE's own server (github.com/spiffe/spire v1.13.3, unmodified)
# used by "make bench-compare" (bench/compare runs it side by side with
# castellan-server), and prints its absolute path on stdout (progress goes
# to stderr). Never part of "make test".
#
# It is built from its own module (server/go.mod, beside the spire-agent
# module of build.sh and at the same SPIRE release), so SPIRE never enters
# Castellan's own go.mod and the spire-agent build of "make test" is not
# affected by the server's larger dependency set.
#
# Idempotent: if the binary exists and is newer than server/go.mod,
# server/go.sum, server/main.go and this script, nothing is built.
#
# Output: ${CASTELLAN_SPIRE_SERVER:-${CASTELLAN_CACHE:-$HOME/.cache/castellan}/bin/spire-server}
# The first build takes about 15 minutes on a busy 2-core machine.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_bin="${CASTELLAN_CACHE:-$HOME/.cache/castellan}/bin"
out="${CASTELLAN_SPIRE_SERVER:-$cache_bin/spire-server}"

up_to_date() {
	[[ -x "$out" ]] || return 1
	local f
	for f in "$here/server/go.mod" "$here/server/go.sum" "$here/server/main.go" "$here/build-server.sh"; do
		[[ "$out" -nt "$f" ]] || return 1
	done
	return 0
}

if ! up_to_date; then
	mkdir -p "$(dirname "$out")"
	echo "spire-server: building $out (first build takes ~15 min)..." >&2
	start=$SECONDS
	tmp="$out.tmp.$$"
	trap 'rm -f "$tmp"' EXIT
	# Build into a temp file and rename, so an interrupted build never leaves
	# a half-written binary that looks up to date. Stamp the release version
	# as SPIRE's own build does, so "spire-server --version" reports 1.13.3.
	ldflags="-X github.com/spiffe/spire/pkg/common/version.gittag=1.13.3"
	(cd "$here/server" && GOWORK=off GOFLAGS="${GOFLAGS:-} -mod=readonly" go build -trimpath -ldflags="$ldflags" -o "$tmp" .)
	mv -f "$tmp" "$out"
	trap - EXIT
	echo "spire-server: built in $((SECONDS - start))s" >&2
fi
echo "$out"
