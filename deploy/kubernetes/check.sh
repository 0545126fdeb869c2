#!/usr/bin/env bash
# Checks the Helm chart (deploy/helm/switchyard) and the plain manifests beside this script for
# real: `helm lint` (both modes, and with the ServiceMonitor), `helm template`, the rendered
# configuration file read by the switchyard binary itself, the plain manifests compared with the
# chart's output, every rendered object sent to a real kube-apiserver (deploy/kubernetes/
# local.sh) with server-side dry-run and strict field validation (the ServiceMonitor too, after
# installing its CRD: servicemonitor-crd.sh), broken renders refused, and a real `helm install`,
# `upgrade` and `uninstall` of each mode. Exits non-zero on any failure.
#
#   deploy/kubernetes/check.sh              # the check (CI runs it from scripts/test.sh)
#   deploy/kubernetes/check.sh regenerate   # rewrite embedded.yaml and kafka.yaml from the chart
#
# Helm and kube-apiserver/kubectl/etcd are built from Go modules the first time (cached under
# ~/.cache/switchyard/). The API server is started if it is not running, and stopped at the end
# only if this script started it; it keeps the namespace `switchyard` and the ServiceMonitor CRD.
# One check at a time per API server (K8S_PORT picks another). SWITCHYARD_BIN (default
# target/debug/switchyard, built if missing) reads the rendered configuration.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
chart="$root/deploy/helm/switchyard"
release=switchyard
namespace=switchyard
# The API server local.sh runs; helm renders for it (and the chart's kubeVersion is checked against it).
kube_version=1.37.2
started=$(date +%s)

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
fail() {
    log "FAILED: $*"
    exit 1
}

helm="$("$root/deploy/helm/tool.sh")"
work="$(mktemp -d)"
stop_apiserver=false
cleanup() {
    if $stop_apiserver; then
        "$here/local.sh" down || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# The chart's output for one of the documented value sets.
render() {
    local mode="$1"
    shift
    local values=()
    [[ "$mode" == kafka ]] && values=(-f "$here/kafka-values.yaml")
    "$helm" template "$release" "$chart" --namespace "$namespace" --kube-version "$kube_version" \
        "${values[@]}" "$@"
}

# A plain manifest: a header, then the chart's output with the documented values.
manifest() {
    local mode="$1" what values_flag=""
    if [[ "$mode" == kafka ]]; then
        what="three nodes (a Deployment) sharing a Kafka cluster; values: deploy/kubernetes/kafka-values.yaml"
        values_flag=" -f deploy/kubernetes/kafka-values.yaml"
    else
        what="one node (a StatefulSet) on its embedded log, a 10Gi volume; the chart's default values"
    fi
    cat <<HEADER
# Switchyard in namespace \`$namespace\`: $what.
# Generated from the Helm chart deploy/helm/switchyard: do not edit. deploy/kubernetes/check.sh
# fails when this file differs from the chart's output. Regenerate with
#   deploy/kubernetes/check.sh regenerate
# which runs
#   "\$(deploy/helm/tool.sh)" template $release deploy/helm/switchyard --namespace $namespace --kube-version $kube_version$values_flag
# Apply:
#   kubectl create namespace $namespace
#   kubectl apply -f deploy/kubernetes/$mode.yaml
HEADER
    render "$mode"
}

if [[ "${1:-}" == regenerate ]]; then
    for mode in embedded kafka; do
        manifest "$mode" >"$work/$mode.yaml"
        mv "$work/$mode.yaml" "$here/$mode.yaml"
        log "wrote deploy/kubernetes/$mode.yaml"
    done
    exit 0
elif [[ $# -gt 0 ]]; then
    echo "usage: $0 [regenerate]" >&2
    exit 2
fi

log "helm: $("$helm" version --short)"

log "helm lint (both modes, with and without the ServiceMonitor)"
for mode in embedded kafka; do
    values=()
    [[ "$mode" == kafka ]] && values=(-f "$here/kafka-values.yaml")
    "$helm" lint --strict "$chart" --namespace "$namespace" --kube-version "$kube_version" "${values[@]}" >&2 \
        || fail "helm lint ($mode)"
    "$helm" lint --strict "$chart" --namespace "$namespace" --kube-version "$kube_version" "${values[@]}" \
        --set metrics.serviceMonitor.enabled=true >&2 || fail "helm lint ($mode, serviceMonitor)"
    "$helm" lint --strict "$chart" --namespace "$namespace" --kube-version "$kube_version" "${values[@]}" \
        --set kubernetes.enabled=true >&2 || fail "helm lint ($mode, kubernetes)"
done
# The schema and the templates refuse what cannot work.
expect_refused() {
    local what="$1"
    shift
    if "$helm" template "$release" "$chart" --kube-version "$kube_version" "$@" >"$work/refused.out" 2>&1; then
        fail "the chart accepted $what"
    fi
    log "refused as it should: $what ($(grep -v '^$' "$work/refused.out" | tail -n 1 | cut -c1-150))"
}
expect_refused "mode kafka without kafka.bootstrapServers" --set mode=kafka
expect_refused "an unknown mode" --set mode=cluster
expect_refused "config.log (the chart's key)" --set config.log=embedded
expect_refused "config.kubernetes (the chart's key)" --set config.kubernetes.in_cluster=true
expect_refused "a watch rule that writes" --set kubernetes.enabled=true --set 'kubernetes.watchRules[0].apiGroups[0]=' \
    --set 'kubernetes.watchRules[0].resources[0]=secrets' --set 'kubernetes.watchRules[0].verbs[0]=delete'
expect_refused "an unknown top-level value" --set replica=2

log "helm template (both modes, the ServiceMonitor, a preStop sleep)"
render embedded >"$work/embedded.yaml"
render kafka >"$work/kafka.yaml"
render embedded --set metrics.serviceMonitor.enabled=true >"$work/embedded-monitor.yaml"
render kafka --set metrics.serviceMonitor.enabled=true >"$work/kafka-monitor.yaml"
render kafka --set preStopSleepSeconds=5 --set config.shutdown_grace_secs=30 >"$work/kafka-prestop.yaml"
render kafka --set kubernetes.enabled=true >"$work/kafka-kubernetes.yaml"
# Every key of deploy/switchyard.toml (but the chart's own) as `config` values: the schema
# must take each one, and switchyard must read them back below.
python3 - "$root/deploy/switchyard.toml" >"$work/all-keys.json" <<'PYTHON'
import json, sys, tomllib
with open(sys.argv[1], "rb") as file:
    config = tomllib.load(file)
for key in ("listen", "data_dir", "log", "kafka"):
    config.pop(key)
config.setdefault("tracing", {})["otlp_endpoint"] = "http://otel-collector.observability:4318"
json.dump({"config": config}, sys.stdout)
PYTHON
render embedded -f "$work/all-keys.json" >"$work/all-keys.yaml"
kinds() { grep -E '^kind: ' "$1" | sort | uniq -c | awk '{printf "%s%s×%s", sep, $3, $1; sep=", "}'; }
for file in embedded kafka embedded-monitor kafka-monitor kafka-prestop kafka-kubernetes; do
    log "  $file: $(kinds "$work/$file.yaml")"
done
grep -q '^kind: ClusterRoleBinding' "$work/kafka-kubernetes.yaml" || fail "kubernetes.enabled renders no ClusterRoleBinding"
grep -q 'automountServiceAccountToken: true' "$work/kafka-kubernetes.yaml" \
    || fail "kubernetes.enabled does not mount the service account token"
grep -q '^kind: StatefulSet' "$work/embedded.yaml" || fail "embedded mode renders no StatefulSet"
grep -q '^kind: Deployment' "$work/kafka.yaml" || fail "kafka mode renders no Deployment"
grep -q '^kind: ServiceMonitor' "$work/kafka-monitor.yaml" || fail "serviceMonitor.enabled renders no ServiceMonitor"
grep -q 'terminationGracePeriodSeconds: 30$' "$work/embedded.yaml" || fail "grace period is not shutdown grace + 20"
grep -q 'terminationGracePeriodSeconds: 55$' "$work/kafka-prestop.yaml" \
    || fail "grace period is not preStop sleep + shutdown grace + 20"

log "the rendered configuration files, read by switchyard itself (config print)"
switchyard="${SWITCHYARD_BIN:-$root/target/debug/switchyard}"
if [[ ! -x "$switchyard" ]]; then
    (cd "$root" && cargo build --bin switchyard) >&2
fi
# The ConfigMap's switchyard.toml: the block under `switchyard.toml: |`, indented by 4.
config_of() {
    awk '/^  switchyard.toml: \|$/ {on = 1; next} on && /^    / {print substr($0, 5); next} on && /^$/ {print; next} on {exit}' "$1"
}
# Without the caller's SWITCHYARD_* variables: they would override the file.
unset_vars=()
while IFS= read -r name; do
    unset_vars+=(-u "$name")
done < <(env | grep -o '^SWITCHYARD_[A-Z0-9_]*' || true)
for file in embedded kafka kafka-prestop all-keys kafka-kubernetes; do
    config_of "$work/$file.yaml" >"$work/$file.toml"
    [[ -s "$work/$file.toml" ]] || fail "no switchyard.toml in the $file render"
    env "${unset_vars[@]}" "$switchyard" config print --config "$work/$file.toml" >"$work/$file.effective" \
        || fail "switchyard refused the $file configuration: $(cat "$work/$file.toml")"
done
grep -q '^log = "embedded"' "$work/embedded.effective" || fail "embedded render: log is not embedded"
grep -q '^log = "kafka://kafka-0.kafka.kafka.svc:9092,kafka-1.kafka.kafka.svc:9092,kafka-2.kafka.kafka.svc:9092"' \
    "$work/kafka.effective" || fail "kafka render: log is not the bootstrap servers"
grep -q '^replication_factor = 3' "$work/kafka.effective" || fail "kafka render: replication factor not applied"
grep -q '^shutdown_grace_secs = 30' "$work/kafka-prestop.effective" || fail "config.shutdown_grace_secs not applied"
grep -q '^otlp_endpoint = "http://otel-collector.observability:4318/\?"' "$work/all-keys.effective" \
    || fail "config.tracing.otlp_endpoint not applied"
grep -q '^max_total_bytes = 53687091200' "$work/all-keys.effective" || fail "config.retention.max_total_bytes not applied"
grep -q '^advertised_url = "http://switchyard.switchyard.svc.cluster.local:8080/"' "$work/kafka-kubernetes.effective" \
    || fail "kubernetes.enabled: the advertised URL is not the release's Service"

log "plain manifests against the chart"
for mode in embedded kafka; do
    manifest "$mode" >"$work/$mode.expected"
    diff -u "$here/$mode.yaml" "$work/$mode.expected" >&2 \
        || fail "deploy/kubernetes/$mode.yaml differs from the chart: run deploy/kubernetes/check.sh regenerate"
done

log "a real kube-apiserver v$kube_version"
if "$here/local.sh" status; then
    log "  already running: it stays up"
else
    stop_apiserver=true
fi
kubeconfig="$("$here/local.sh" up)"
kubectl="$("$here/local.sh" build)/kubectl"
k() { "$kubectl" --kubeconfig "$kubeconfig" "$@"; }
# For real: the dry-run of namespaced objects needs their namespace to exist.
k create namespace "$namespace" --dry-run=client -o yaml | k apply --server-side --field-manager=switchyard-check -f - >&2
# Server-side apply, dry-run: the API server decodes with strict field validation (unknown or
# duplicate fields fail), defaults, validates and runs admission, and stores nothing.
dry_run() {
    k apply --server-side --dry-run=server --validate=strict --field-manager=switchyard-check \
        --namespace "$namespace" -f "$1" 2>&1
}
# A bare API server has no ServiceMonitor kind: install (for real) prometheus-operator's CRD,
# generated from its Go API types, so that the ServiceMonitor renders are checked too.
log "the ServiceMonitor CRD (monitoring.coreos.com/v1)"
k apply --server-side --field-manager=switchyard-check -f "$("$here/servicemonitor-crd.sh")" >&2
k wait --for condition=established --timeout=60s crd/servicemonitors.monitoring.coreos.com >&2
log "server-side dry-run"
for file in "$work/embedded.yaml" "$work/kafka.yaml" "$work/kafka-prestop.yaml" "$work/all-keys.yaml" "$work/kafka-kubernetes.yaml" \
    "$work/embedded-monitor.yaml" "$work/kafka-monitor.yaml" "$here/embedded.yaml" "$here/kafka.yaml"; do
    name="${file#"$root"/}"
    name="${name#"$work"/}"
    # Right after a CRD is established its kind may still be unknown to discovery for a moment.
    for attempt in 1 2 3 4 5 6 7 8 9 10; do
        if out="$(dry_run "$file")"; then
            break
        fi
        if [[ $attempt -eq 10 ]] || ! grep -q 'ensure CRDs are installed first' <<<"$out"; then
            fail "the API server refused $name: $out"
        fi
        sleep 1
    done
    log "  $name: $(wc -l <<<"$out") objects accepted"
    while IFS= read -r line; do
        printf '    %s\n' "$line" >&2
    done <<<"$out"
done
# The dry-run must be able to fail: renders with a field the API does not have, and with a
# value its validation refuses, are refused.
sed '/^kind: StatefulSet$/,$ s/^        - name: switchyard$/        - name: switchyard\n          notAField: true/' \
    "$work/embedded.yaml" >"$work/unknown-field.yaml"
sed '/^kind: Deployment$/,$ s/^              containerPort: 8080$/              containerPort: 80800/' \
    "$work/kafka.yaml" >"$work/bad-port.yaml"
sed '/^kind: ServiceMonitor$/,$ s/^      interval: 30s$/      interval: every 30 seconds/' \
    "$work/kafka-monitor.yaml" >"$work/bad-interval.yaml"
for case in "unknown-field:notAField" "bad-port:80800" "bad-interval:every 30 seconds"; do
    file="$work/${case%%:*}.yaml"
    mark="${case#*:}"
    grep -q "$mark" "$file" || fail "could not make ${case%%:*}.yaml"
    if out="$(dry_run "$file")"; then
        fail "the API server accepted ${case%%:*}.yaml: $out"
    fi
    grep -q "$mark" <<<"$out" || fail "${case%%:*}.yaml was refused for another reason: $out"
    log "  refused as it should: $(grep -m1 "$mark" <<<"$out" | cut -c1-220)"
done

# Helm's own client against the API server: a real install of each mode, an upgrade (a changed
# configuration rolls the pods), and an uninstall. Nothing runs them (no kubelet here); the
# API server stores the objects, then they are deleted.
log "helm install, upgrade, uninstall (for real)"
helm_k() { "$helm" --kubeconfig "$kubeconfig" --namespace "$namespace" "$@"; }
helm_k uninstall switchyard-check --ignore-not-found >/dev/null 2>&1 || true
for mode in embedded kafka; do
    values=()
    [[ "$mode" == kafka ]] && values=(-f "$here/kafka-values.yaml")
    helm_k install switchyard-check "$chart" "${values[@]}" >"$work/install.out" 2>&1 \
        || fail "helm install ($mode): $(cat "$work/install.out")"
    grep -q "Switchyard 0.1.0 ($mode mode) is installed as switchyard-check" "$work/install.out" \
        || fail "helm install ($mode) printed no NOTES: $(cat "$work/install.out")"
    workload=statefulset
    [[ "$mode" == kafka ]] && workload=deployment
    before="$(k get "$workload" switchyard-check --namespace "$namespace" \
        -o jsonpath='{.spec.template.metadata.annotations.checksum/config}')"
    helm_k upgrade switchyard-check "$chart" "${values[@]}" --set config.shutdown_grace_secs=25 >/dev/null \
        || fail "helm upgrade ($mode)"
    after="$(k get "$workload" switchyard-check --namespace "$namespace" \
        -o jsonpath='{.spec.template.metadata.annotations.checksum/config} {.spec.template.spec.terminationGracePeriodSeconds}')"
    [[ -n "$before" && "$after" != "$before 45" && "$after" == *" 45" ]] \
        || fail "helm upgrade ($mode) did not roll the pods with the new grace: before '$before', after '$after'"
    helm_k uninstall switchyard-check >/dev/null || fail "helm uninstall ($mode)"
    log "  $mode: installed, upgraded (grace 45 s, config checksum changed), uninstalled"
done

log "kubernetes check passed in $(($(date +%s) - started)) s"
