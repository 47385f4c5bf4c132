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
# shellcheck source=../../cachebuild.sh
source "$here/../../cachebuild.sh"
out="$(cachebuild_out CASTELLAN_SPIRE_AGENT spire-agent)"

if ! cachebuild_fresh "$out" "$here/go.mod" "$here/go.sum" "$here/main.go" "$here/build.sh"; then
	# Stamp the release version as SPIRE's own build does, so
	# "spire-agent --version" reports 1.13.3.
	cachebuild_module spire-agent "$out" "$here" "-X github.com/spiffe/spire/pkg/common/version.gittag=1.13.3"
fi
echo "$out"
