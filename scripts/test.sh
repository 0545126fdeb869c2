#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests use, checks formatting
# and lints, builds once, then runs every test (unit, property, end-to-end, interop).
set -euo pipefail
cd "$(dirname "$0")/.."
# One build from a clean checkout gains nothing from incremental state, which takes gigabytes.
export CARGO_INCREMENTAL=0

log() { printf '\n==> %s\n' "$*"; }

log "interop: the CloudEvents SDKs the interop matrix drives (Python, JavaScript, Go; pinned, cached)"
tests/interop/setup.sh

log "rust: toolchain components"
if command -v rustup >/dev/null 2>&1; then
    rustup component add rustfmt clippy >/dev/null 2>&1 || true
fi

log "format"
cargo fmt --all -- --check

log "lint"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "dependencies: licenses, bans and sources (deny.toml), and none unused"
# Installed only when missing (a first run compiles them, a few minutes each); pinned to the
# versions these checks were verified with, which build with the toolchain here.
command -v cargo-deny >/dev/null 2>&1 || cargo install --locked cargo-deny@0.20.2
command -v cargo-machete >/dev/null 2>&1 || cargo install --locked cargo-machete@0.9.2
# No `advisories`: its database comes from GitHub, out of reach here (see deny.toml).
cargo deny --locked check licenses bans sources
# A search of each crate's sources for the names in its [dependencies] (not dev- or build-); a
# false positive (a crate used only through a macro, say) goes in that crate's
# `[package.metadata.cargo-machete] ignored`.
cargo machete --skip-target-dir

log "build (the end-to-end tests run this binary, and kafka_tool to prepare Kafka)"
cargo build --workspace --bins --locked
cargo build -p switchyard-log-kafka --example kafka_tool --locked

log "deploy: the Helm chart and plain manifests (helm lint and template, the rendered configuration read back, server-side dry-run and helm install on a real kube-apiserver)"
# Helm 4.3.2, kube-apiserver/kubectl 1.37.2, etcd 3.7.3 and the ServiceMonitor CRD are built from
# Go modules the first time (~14 min of 2 cores; cached under ~/.cache/switchyard/, seconds
# after). The API server runs on 127.0.0.1:16443 for the check and is stopped after it.
deploy/kubernetes/check.sh
# The Compose checker (compose-go), built once here rather than by the tests that run it at once.
deploy/compose/check.sh >/dev/null

log "kafka: a real single-node broker for the Kafka backend's tests"
# Fresh every run: each run leaves thousands of partitions behind, and a broker that kept them
# across runs reached ~20,000 and died of "Too many open files" (the fd limit here is 20000).
deploy/kafka/local.sh down
SWITCHYARD_TEST_KAFKA="$(deploy/kafka/local.sh up)"
export SWITCHYARD_TEST_KAFKA

log "message queues: real NATS (JetStream), RabbitMQ, Mosquitto and Redis servers for the sources' tests"
# Debian's packages, installed by each script when missing; fresh every run, on 127.0.0.1 only.
for server in nats rabbitmq mosquitto redis; do
    deploy/$server/local.sh down
done
SWITCHYARD_TEST_NATS="$(deploy/nats/local.sh up)"
SWITCHYARD_TEST_RABBITMQ="$(deploy/rabbitmq/local.sh up)"
SWITCHYARD_TEST_MQTT="$(deploy/mosquitto/local.sh up)"
SWITCHYARD_TEST_REDIS="$(deploy/redis/local.sh up)"
export SWITCHYARD_TEST_NATS SWITCHYARD_TEST_RABBITMQ SWITCHYARD_TEST_MQTT SWITCHYARD_TEST_REDIS

log "kubernetes: a real kube-apiserver + etcd with Knative's CRDs, for ApiServerSource, references and the broker class"
# The binaries deploy/kubernetes/check.sh built (cached); a fresh etcd, ready in seconds.
deploy/kubernetes/local.sh down
SWITCHYARD_TEST_KUBECONFIG="$(deploy/kubernetes/local.sh up)"
export SWITCHYARD_TEST_KUBECONFIG
deploy/kubernetes/knative-crds.sh apply "$SWITCHYARD_TEST_KUBECONFIG"

log "systemd-analyze, for the systemd unit's test (tests/tests/deploy_binary.rs; nothing is started)"
command -v systemd-analyze >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq systemd >/dev/null; }

log "test"
cargo test --workspace --locked

log "test again on kafka: the core, delivery, filter, sources and sink suites with the kafka log backend"
SWITCHYARD_TEST_BACKEND=kafka cargo test -p switchyard-tests --locked \
    --test admission --test ingest --test rest --test delivery --test delivery_semantics --test filters \
    --test cli --test tracing --test openapi --test metrics --test interop \
    --test sources --test sources_ping --test sources_github --test sources_kafka \
    --test sources_nats --test sources_rabbitmq --test sources_mqtt --test sources_redis --test kafka_sink --test kafka_security \
    --test hostile_limits --test supervision \
    --test sources_apiserver --test kube_references --test kube_broker_class \
    --test auth --test auth_oidc --test secrets --test outbound_guard --test signed_deliveries \
    --test identified_deliveries

log "fuzz smoke (10 s per target; ./scripts/fuzz.sh 600 for a real run)"
./scripts/fuzz.sh 10
