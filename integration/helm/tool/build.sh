#!/usr/bin/env bash
# Builds Helm v3.22.0 (helm.sh/helm/v3/cmd/helm, unmodified, from the Go
# module proxy) used by Castellan's chart test (integration/helm_test.go
# renders, lints and schema-checks deploy/helm/castellan), and prints its
# absolute path on stdout (progress goes to stderr).
#
# "go install module@version" builds with Helm's own go.mod and go.sum, so
# Helm never enters Castellan's go.mod and no system helm is used.
#
# Idempotent: if the binary exists and is newer than this script, nothing is
# built. Change the version below to upgrade.
#
# Output: ${CASTELLAN_HELM:-${CASTELLAN_CACHE:-$HOME/.cache/castellan}/bin/helm}
# The first build (cold module and build caches) took 19 min wall clock, 3.5 min
# of CPU, on the project's 2-core machine while other builds shared it.
set -euo pipefail

version=v3.22.0
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_bin="${CASTELLAN_CACHE:-$HOME/.cache/castellan}/bin"
out="${CASTELLAN_HELM:-$cache_bin/helm}"

if [[ ! -x "$out" || ! "$out" -nt "$here/build.sh" ]]; then
	mkdir -p "$(dirname "$out")"
	echo "helm: building $out ($version, first build takes minutes)..." >&2
	start=$SECONDS
	# Install into a private directory and rename, so an interrupted build
	# never leaves a half-written binary that looks up to date.
	tmp="$(mktemp -d "$(dirname "$out")/.helm-build.XXXXXX")"
	trap 'rm -rf "$tmp"' EXIT
	# Stamp the release version as Helm's own Makefile does, so
	# "helm version" reports v3.22.0.
	ldflags="-X helm.sh/helm/v3/internal/version.version=$version"
	GOWORK=off GOBIN="$tmp" CGO_ENABLED=0 \
		go install -trimpath -ldflags="$ldflags" "helm.sh/helm/v3/cmd/helm@$version"
	mv -f "$tmp/helm" "$out"
	echo "helm: built in $((SECONDS - start))s" >&2
fi
echo "$out"
