#!/usr/bin/env bash
# Prints the path of the CustomResourceDefinition of prometheus-operator's ServiceMonitor, so that
# deploy/kubernetes/check.sh can send the chart's optional ServiceMonitor to a bare API server.
# The CRD is generated the first time (about 20 s of 2 cores; cached under
# ~/.cache/switchyard/servicemonitor-crd-v$operator_version/) by controller-gen, the tool
# prometheus-operator generates its own CRDs with, from prometheus-operator's Go API types
# (module github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring): the same
# schema, without descriptions. Only the path goes to standard output.
#
#   kubectl apply --server-side -f "$(deploy/kubernetes/servicemonitor-crd.sh)"
set -euo pipefail

operator_version="0.95.2"
controller_tools_version="0.23.0"
cache="$HOME/.cache/switchyard/servicemonitor-crd-v$operator_version"
crd="$cache/monitoring.coreos.com_servicemonitors.yaml"

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }

if [[ ! -s "$crd" ]]; then
    if ! command -v go >/dev/null 2>&1; then
        log "installing golang-go"
        apt-get update -qq && apt-get install -y -qq golang-go >/dev/null
    fi
    mkdir -p "$cache"
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    types=github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring
    printf 'module crdgen\n\ngo 1.26.0\n\nrequire (\n\t%s v%s\n\tsigs.k8s.io/controller-tools v%s\n)\n' \
        "$types" "$operator_version" "$controller_tools_version" >"$work/go.mod"
    printf '//go:build tools\n\npackage crdgen\n\nimport (\n\t_ "%s/v1"\n\t_ "sigs.k8s.io/controller-tools/cmd/controller-gen"\n)\n' \
        "$types" >"$work/tools.go"
    log "controller-gen v$controller_tools_version and the monitoring.coreos.com v$operator_version types: resolving modules"
    (cd "$work" && nice -n 19 go mod tidy)
    log "controller-gen: building"
    (cd "$work" && nice -n 19 go build -trimpath -ldflags="-s -w" -o "$work/controller-gen" \
        sigs.k8s.io/controller-tools/cmd/controller-gen)
    log "generating the CRDs of monitoring.coreos.com/v1"
    (cd "$work" && nice -n 19 ./controller-gen crd:maxDescLen=0 paths="$types/v1" output:crd:dir="$work/crds")
    mv "$work/crds/monitoring.coreos.com_servicemonitors.yaml" "$crd.tmp"
    mv "$crd.tmp" "$crd"
    log "generated $crd"
fi
echo "$crd"
