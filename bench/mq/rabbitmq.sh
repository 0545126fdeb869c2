#!/usr/bin/env bash
# RabbitmqSource throughput: how fast Switchyard moves a queue's backlog into an embedded-log
# broker, against how fast RabbitMQ itself takes the messages.
#
#   bench/mq/rabbitmq.sh                          # N=50000 messages of 100 bytes
#   N=200000 PARALLELISM=1000 bench/mq/rabbitmq.sh
#
# Baseline: a plain lapin publisher (the `bench_publish` test of tests/tests/sources_rabbitmq.rs,
# built in release mode) publishing N persistent messages to a durable classic queue with
# publisher confirms, 1000 outstanding. Then a source is declared against that backlog
# (`predeclared`, `parallelism` = the prefetch), and the time until
# `switchyard_source_events_total{kind="RabbitmqSource",outcome="sent"}` reaches N is the
# Switchyard rate. Uses a private RabbitMQ on a free port (and deletes it), and
# `target/release/switchyard serve` on a free port with a temporary data dir.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=bench/mq/lib.sh
. "$here/lib.sh"
n="${N:-50000}"
size="${SIZE:-100}"
parallelism="${PARALLELISM:-100}"

work="$(mktemp -d /tmp/switchyard-bench-rabbitmq.XXXXXX)"
export RABBITMQ_PORT RABBITMQ_DIST_PORT RABBITMQ_DIR="$work/rabbitmq"
RABBITMQ_PORT="$(free_port)"
RABBITMQ_DIST_PORT="$(free_port)"
cleanup() {
    stop_switchyard
    "$root/deploy/rabbitmq/local.sh" down || true
    rm -rf "$work"
}
trap cleanup EXIT

echo "building switchyard and the publisher (release)" >&2
(cd "$root" && cargo build --release --bin switchyard && \
    cargo test --release -p switchyard-tests --test sources_rabbitmq --no-run) >&2 2>"$work/build.log" \
    || { cat "$work/build.log" >&2; exit 1; }
uri="$("$root/deploy/rabbitmq/local.sh" up)"
queue="bench"

published="$(cd "$root" && BENCH_RABBITMQ_URI="$uri" BENCH_QUEUE="$queue" BENCH_N="$n" BENCH_SIZE="$size" \
    cargo test -q --release -p switchyard-tests --test sources_rabbitmq -- --ignored --exact bench_publish \
    --nocapture 2>"$work/publish.log" | sed -n 's/^published [0-9]* in \([0-9.]*\) s$/\1/p')"
[[ -n "$published" ]] || { cat "$work/publish.log" >&2; exit 1; }
baseline="$(python3 -c "print($n / $published)")"

serve_switchyard "$work"
switchyard="$(time_source rabbitmqsources RabbitmqSource sources.knative.dev/v1alpha1 "$n" "{\"connection\": {\"uri\": \"$uri\"}, \"rabbitmqResourcesConfig\": {\"queueName\": \"$queue\", \"predeclared\": true, \"parallelism\": $parallelism}}")"
sleep 1
left="$(HOME="$RABBITMQ_DIR" /usr/lib/rabbitmq/bin/rabbitmqctl -q -n "switchyard-$RABBITMQ_PORT@localhost" \
    list_queues name messages_ready messages_unacknowledged 2>/dev/null | awk -v q="$queue" '$1 == q { print $2, "ready,", $3, "unacknowledged" }')"

printf 'messages: %d x %d B, parallelism (prefetch): %d\n' "$n" "$size" "$parallelism"
printf 'lapin publisher (confirms):  %10.0f msgs/s (persistent, confirmed by RabbitMQ)\n' "$baseline"
printf 'switchyard RabbitmqSource:   %10.0f msgs/s (into an embedded-log broker, acknowledged)\n' "$switchyard"
printf 'ratio switchyard/baseline:   %9.2f\n' "$(python3 -c "print($switchyard / $baseline)")"
printf 'queue after the run:         %s\n' "$left"
