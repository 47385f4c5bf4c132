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
# shellcheck source=../cachebuild.sh
source "$here/../cachebuild.sh"
out="$(cachebuild_out CASTELLAN_OMNIWITNESS omniwitness)"

if ! cachebuild_fresh "$out" "$here/build.sh"; then
	cachebuild_install omniwitness "$out" "github.com/transparency-dev/witness/cmd/omniwitness@$version" ""
fi
echo "$out"
