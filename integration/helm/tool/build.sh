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
# shellcheck source=../../cachebuild.sh
source "$here/../../cachebuild.sh"
out="$(cachebuild_out CASTELLAN_HELM helm)"

if ! cachebuild_fresh "$out" "$here/build.sh"; then
	# Stamp the release version as Helm's own Makefile does, so
	# "helm version" reports v3.22.0.
	cachebuild_install helm "$out" "helm.sh/helm/v3/cmd/helm@$version" "-X helm.sh/helm/v3/internal/version.version=$version"
fi
echo "$out"
