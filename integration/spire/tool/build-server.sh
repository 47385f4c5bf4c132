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
# shellcheck source=../../cachebuild.sh
source "$here/../../cachebuild.sh"
out="$(cachebuild_out CASTELLAN_SPIRE_SERVER spire-server)"

if ! cachebuild_fresh "$out" "$here/server/go.mod" "$here/server/go.sum" "$here/server/main.go" "$here/build-server.sh"; then
	# Stamp the release version as SPIRE's own build does, so
	# "spire-server --version" reports 1.13.3.
	cachebuild_module spire-server "$out" "$here/server" "-X github.com/spiffe/spire/pkg/common/version.gittag=1.13.3"
fi
echo "$out"
