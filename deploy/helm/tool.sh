#!/usr/bin/env bash
# Prints the path of a Helm binary, building it from the Go module proxy the first time (about
# 6 min of 2 cores; cached under ~/.cache/switchyard/helm-v4.3.2/, instant after). No prebuilt
# download: Helm is a Go module like any other.
#
#   "$(deploy/helm/tool.sh)" lint deploy/helm/switchyard
#
# Only the path goes to standard output; progress goes to standard error.
set -euo pipefail

version="4.3.2"
module="helm.sh/helm/v4"
cache="$HOME/.cache/switchyard/helm-v$version"
helm="$cache/helm"

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }

if [[ ! -x "$helm" ]]; then
    if ! command -v go >/dev/null 2>&1; then
        log "installing golang-go"
        apt-get update -qq && apt-get install -y -qq golang-go >/dev/null
    fi
    mkdir -p "$cache"
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    printf 'module helmbuild\n\ngo 1.26.0\n\nrequire %s v%s\n' "$module" "$version" >"$work/go.mod"
    printf '//go:build tools\n\npackage helmbuild\n\nimport _ "%s/cmd/helm"\n' "$module" >"$work/tools.go"
    log "helm v$version: resolving modules"
    (cd "$work" && nice -n 19 go mod tidy)
    log "helm v$version: building"
    # The version Helm reports (`helm version`) is set at link time, as its own Makefile does.
    (cd "$work" && nice -n 19 go build -trimpath \
        -ldflags="-s -w -X $module/internal/version.version=v$version -X $module/internal/version.gitTreeState=clean" \
        -o "$helm.tmp" "$module/cmd/helm")
    mv "$helm.tmp" "$helm"
    log "built $helm"
fi
echo "$helm"
