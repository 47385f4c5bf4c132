#!/usr/bin/env bash
# Builds Prometheus's promtool v3.16.0 (module github.com/prometheus/prometheus
# v0.316.0, cmd/promtool, unmodified, from the Go module proxy) used by
# Castellan's monitoring test (integration/monitoring_test.go checks the
# alerting rules and the dashboard's PromQL with Prometheus's own parser and
# runs the rules' unit tests), and prints its absolute path on stdout
# (progress goes to stderr).
#
# "go install module@version" builds with Prometheus's own go.mod and go.sum,
# so Prometheus never enters Castellan's go.mod.
#
# Idempotent: if the binary exists and is newer than this script, nothing is
# built. Change the version below to upgrade.
#
# Output: ${CASTELLAN_PROMTOOL:-${CASTELLAN_CACHE:-$HOME/.cache/castellan}/bin/promtool}
# The first build (cold module and build caches) took 39 min wall clock, 10.5
# min of CPU, on the project's 2-core machine while other builds shared it.
set -euo pipefail

module_version=v0.316.0 # Prometheus v3.16.0
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_bin="${CASTELLAN_CACHE:-$HOME/.cache/castellan}/bin"
out="${CASTELLAN_PROMTOOL:-$cache_bin/promtool}"

if [[ ! -x "$out" || ! "$out" -nt "$here/build.sh" ]]; then
	mkdir -p "$(dirname "$out")"
	echo "promtool: building $out ($module_version, first build takes minutes)..." >&2
	start=$SECONDS
	tmp="$(mktemp -d "$(dirname "$out")/.promtool-build.XXXXXX")"
	trap 'rm -rf "$tmp"' EXIT
	ldflags="-X github.com/prometheus/common/version.Version=3.16.0"
	GOWORK=off GOBIN="$tmp" CGO_ENABLED=0 \
		go install -trimpath -ldflags="$ldflags" \
		"github.com/prometheus/prometheus/cmd/promtool@$module_version"
	mv -f "$tmp/promtool" "$out"
	echo "promtool: built in $((SECONDS - start))s" >&2
fi
echo "$out"
