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
# shellcheck source=../../cachebuild.sh
source "$here/../../cachebuild.sh"
out="$(cachebuild_out CASTELLAN_PROMTOOL promtool)"

if ! cachebuild_fresh "$out" "$here/build.sh"; then
	cachebuild_install promtool "$out" "github.com/prometheus/prometheus/cmd/promtool@$module_version" "-X github.com/prometheus/common/version.Version=3.16.0"
fi
echo "$out"
