#!/usr/bin/env bash
# Builds Dapr's sidecar `daprd` (the peer of `switchyard-bench --peer dapr`) from the Go module
# proxy and prints the path of the binary. Idempotent: the binary is cached outside the clone,
# keyed by version, and a cached binary is reused as is. A cold build takes about 3 minutes.
#
# The wrapper module requires github.com/dapr/dapr at the pinned version and copies dapr's own
# `replace` lines, because Go ignores the replace directives of a dependency: without them the
# build would resolve different (or unlicensed, or missing) module versions than dapr's own.
set -euo pipefail

dapr_version="v1.16.5"
cache_dir="${XDG_CACHE_HOME:-$HOME/.cache}/switchyard/daprd-${dapr_version}"
binary="$cache_dir/daprd"

if [[ -x "$binary" ]]; then
    echo "$binary"
    exit 0
fi

command -v go >/dev/null || { echo "bench/dapr/build.sh: go is not installed" >&2; exit 1; }

work_dir="$(mktemp -d)"
trap 'rm -rf "$work_dir"' EXIT

# `go mod download -json` names the cached go.mod of dapr in its "GoMod" field.
dapr_go_mod="$(go mod download -json "github.com/dapr/dapr@${dapr_version}" \
    | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
[[ -f "$dapr_go_mod" ]] || { echo "bench/dapr/build.sh: no go.mod for dapr ${dapr_version} (got '${dapr_go_mod}')" >&2; exit 1; }
dapr_go_directive="$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$dapr_go_mod" | head -n 1)"

{
    echo "module switchyard.local/daprd-build"
    echo
    echo "go ${dapr_go_directive}"
    echo
    echo "require github.com/dapr/dapr ${dapr_version}"
    echo
    # Every `replace` of dapr's go.mod: single lines and `replace ( ... )` blocks.
    awk '
        /^replace \(/ { in_block = 1; print; next }
        in_block { print; if ($0 ~ /^\)/) { in_block = 0; print "" } ; next }
        /^replace / { print }
    ' "$dapr_go_mod"
} > "$work_dir/go.mod"

# -mod=mod lets the build fill go.sum from the proxy; the versions are the ones dapr's go.mod pins.
# As dapr's Makefile builds a release: CGO off, stablecomponents (without a components tag daprd
# panics at start), the version stamped in, no symbol table or DWARF (-s -w).
mkdir -p "$cache_dir"
(
    cd "$work_dir"
    CGO_ENABLED=0 go build -mod=mod -trimpath -tags stablecomponents \
        -ldflags "-s -w -X github.com/dapr/dapr/pkg/buildinfo.version=${dapr_version#v}" \
        -o "$work_dir/daprd" github.com/dapr/dapr/cmd/daprd
)
mv "$work_dir/daprd" "$binary.partial"
mv "$binary.partial" "$binary"
echo "$binary"
