# shellcheck shell=bash
# Sourced by the build.sh scripts of the tools the tests build once into the
# cache (kube-testenv, kube-node, kube-coredns, spire-agent, spire-server,
# helm, promtool, omniwitness): one definition of where a tool goes, when it is up to date,
# and how it is built so that an interrupted build never leaves a
# half-written binary that looks up to date (build into a temporary name,
# then rename). Progress goes to stderr; the scripts print the path on stdout.

# cachebuild_out VAR NAME prints the tool's path: $VAR when set, else
# ${CASTELLAN_CACHE:-$HOME/.cache/castellan}/bin/NAME.
cachebuild_out() {
	local var="$1" name="$2"
	printf '%s\n' "${!var:-${CASTELLAN_CACHE:-$HOME/.cache/castellan}/bin/$name}"
}

# cachebuild_fresh OUT FILE... succeeds when OUT is executable and newer
# than every FILE.
cachebuild_fresh() {
	local out="$1" f
	shift
	[[ -x "$out" ]] || return 1
	for f in "$@"; do
		[[ "$out" -nt "$f" ]] || return 1
	done
}

# cachebuild_module NAME OUT DIR LDFLAGS builds the Go module in DIR (its own
# go.mod and go.sum, read-only, no workspace) into OUT.
cachebuild_module() {
	local name="$1" out="$2" dir="$3" ldflags="$4" start=$SECONDS
	mkdir -p "$(dirname "$out")"
	echo "$name: building $out..." >&2
	local tmp="$out.tmp.$$"
	trap 'rm -f "'"$tmp"'"' EXIT
	(cd "$dir" && GOWORK=off GOFLAGS="${GOFLAGS:-} -mod=readonly" go build -trimpath -ldflags="$ldflags" -o "$tmp" .)
	mv -f "$tmp" "$out"
	trap - EXIT
	echo "$name: built in $((SECONDS - start))s" >&2
}

# cachebuild_install NAME OUT MODULE_PATH@VERSION LDFLAGS runs "go install
# MODULE_PATH@VERSION" with the tool's own go.mod (never Castellan's) from a
# private directory, and moves the binary to OUT.
cachebuild_install() {
	local name="$1" out="$2" pkg="$3" ldflags="$4" start=$SECONDS
	mkdir -p "$(dirname "$out")"
	echo "$name: building $out (${pkg#*@}, the first build takes minutes)..." >&2
	local tmp
	tmp="$(mktemp -d "$(dirname "$out")/.$name-build.XXXXXX")"
	trap 'rm -rf "'"$tmp"'"' EXIT
	(cd "$tmp" && GOWORK=off GOFLAGS= GOBIN="$tmp" CGO_ENABLED=0 go install -trimpath -ldflags="$ldflags" "$pkg")
	mv -f "$tmp/$(basename "${pkg%@*}")" "$out"
	rm -rf "$tmp"
	trap - EXIT
	echo "$name: built in $((SECONDS - start))s" >&2
}
