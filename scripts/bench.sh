#!/usr/bin/env bash
# The benchmark: builds the release binaries, then runs every scenario against the release
# `switchyard` and prints one markdown table (metric | result | goal | met?); BENCHMARKS.md
# holds the last one. Arguments go to switchyard-bench, e.g.:
#   ./scripts/bench.sh                    # everything, each number the median of 3 runs (~6 min plus the build)
#   ./scripts/bench.sh --quick            # small sizes, one run: a smoke test (~30 s plus the build)
#   ./scripts/bench.sh --runs 5 --only latency --only ingest
#   ./scripts/bench.sh --data-root /mnt/fast   # where the temporary data directories go
#   ./scripts/bench.sh --kafka kafka://127.0.0.1:19092   # plus the Kafka latency row (deploy/kafka/local.sh up)
#   ./scripts/bench.sh --kafka kafka://127.0.0.1:19092 --peer dapr --only peer   # Dapr's daprd side by side
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p switchyard -p switchyard-bench
# The Kafka ingest ceiling (`--kafka`): a raw rdkafka producer, built where rdkafka lives; and
# kafka_tool, which creates the peer's topic (`--peer dapr`: the local Kafka creates none).
cargo build --release --locked -p switchyard-log-kafka --example raw_producer --example kafka_tool
target="${CARGO_TARGET_DIR:-target}/release"
exec "$target/switchyard-bench" --switchyard "$target/switchyard" "$@"
