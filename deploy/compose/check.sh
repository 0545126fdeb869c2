#!/usr/bin/env bash
# Validates Compose files as `docker compose config` does, without a container engine: the
# compose-go loader (the library Docker Compose is built on) in check/, built once from the Go
# module proxy and cached. Prints each resolved project as JSON on stdout.
#
#   deploy/compose/check.sh                       # both files beside this script
#   deploy/compose/check.sh path/to/compose.yaml  # others
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
# Keyed by the checker's sources, so an edit rebuilds it and nothing else does.
key="$(cat "$here/check/go.mod" "$here/check/go.sum" "$here/check/main.go" | sha256sum | cut -c1-12)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/switchyard/compose-check-$key"
checker="$cache/compose-check"

if [[ ! -x "$checker" ]]; then
    command -v go >/dev/null 2>&1 || { echo "check.sh: needs Go (https://go.dev/dl/)" >&2; exit 2; }
    echo "building compose-check (compose-go, from the Go module proxy) into $cache" >&2
    mkdir -p "$cache"
    # Built aside and renamed: checks started at once each build, and none runs a half-written file.
    (cd "$here/check" && go build -trimpath -o "$checker.$$" .) >&2
    mv "$checker.$$" "$checker"
fi

if (($#)); then
    exec "$checker" "$@"
fi
exec "$checker" "$here/compose.yaml" "$here/kafka.yaml"
