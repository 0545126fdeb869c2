#!/usr/bin/env bash
# Knative Eventing's own CRDs (Broker, Trigger, EventPolicy, ApiServerSource, ...), from the
# `knative.dev/eventing` Go module's config/core/resources/ (the Go module proxy serves it; no
# download from GitHub), for the API server of deploy/kubernetes/local.sh.
#
#   deploy/kubernetes/knative-crds.sh dir               # print the folder holding the CRD YAMLs
#   deploy/kubernetes/knative-crds.sh apply KUBECONFIG  # apply them (idempotent) and wait until
#                                                       # every one is Established
set -euo pipefail

eventing_version="v0.50.0"
here="$(cd "$(dirname "$0")" && pwd)"

crd_dir() {
    command -v go >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq golang-go >/dev/null; }
    local module
    module="$(cd /tmp && GOFLAGS=-mod=mod go mod download -json "knative.dev/eventing@$eventing_version" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
    echo "$module/config/core/resources"
}

case "${1:-}" in
dir) crd_dir ;;
apply)
    kubeconfig="${2:?usage: $0 apply KUBECONFIG}"
    kubectl="$("$here/local.sh" build)/kubectl"
    dir="$(crd_dir)"
    # Server-side: several of these CRDs are larger than client-side apply's annotation allows.
    "$kubectl" --kubeconfig "$kubeconfig" apply --server-side --force-conflicts -f "$dir" >/dev/null
    "$kubectl" --kubeconfig "$kubeconfig" wait --for condition=Established --timeout=60s \
        -f "$dir" >/dev/null
    ;;
*)
    echo "usage: $0 dir | apply KUBECONFIG" >&2
    exit 2
    ;;
esac
