#!/usr/bin/env bash
# Builds transparency-dev's omniwitness (module github.com/transparency-dev/witness,
# cmd/omniwitness, unmodified, from the Go module proxy), the independent
# C2SP tlog-witness that Castellan's witness tests submit checkpoints to
# (the ca/witness tests; harness in ca/witness/omniwitness_test.go), and
# prints its absolute path on stdout
# (progress goes to stderr).
#
# "go install module@version" builds with the witness's own go.mod and go.sum,
# outside any module, so none of its dependencies enter Castellan's go.mod.
#
# Idempotent: if the binary exists and is newer than this script, nothing is
# built. Change the version below to upgrade.
#
# Output: ${CASTELLAN_OMNIWITNESS:-${CASTELLAN_CACHE:-$HOME/.cache/castellan}/bin/omniwitness}
set -euo pipefail

version=v0.0.0-20260720115447-2e1c6971d19e
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_bin="${CASTELLAN_CACHE:-$HOME/.cache/castellan}/bin"
out="${CASTELLAN_OMNIWITNESS:-$cache_bin/omniwitness}"

if [[ ! -x "$out" || ! "$out" -nt "$here/build.sh" ]]; then
	mkdir -p "$(dirname "$out")"
	echo "omniwitness: building $out ($version, the first build takes about a minute)..." >&2
	start=$SECONDS
	# Install into a private directory and rename, so an interrupted build
	# never leaves a half-written binary that looks up to date. Run from the
	# temporary directory so no enclosing go.mod or go.work is consulted.
	tmp="$(mktemp -d "$(dirname "$out")/.omniwitness-build.XXXXXX")"
	trap 'rm -rf "$tmp"' EXIT
	(cd "$tmp" && GOWORK=off GOFLAGS= GOBIN="$tmp" CGO_ENABLED=0 \
		go install -trimpath "github.com/transparency-dev/witness/cmd/omniwitness@$version")
	mv -f "$tmp/omniwitness" "$out"
	echo "omniwitness: built in $((SECONDS - start))s" >&2
fi
echo "$out"
