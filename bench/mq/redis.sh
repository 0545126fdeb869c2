#!/usr/bin/env bash
# RedisStreamSource throughput: how fast Switchyard moves a Redis stream's backlog into an
# embedded-log broker, against how fast Redis itself takes the entries.
#
#   bench/mq/redis.sh            # N=50000 entries of 100 bytes
#   N=200000 COUNT=1000 bench/mq/redis.sh
#
# Baseline: `redis-benchmark -n N -P 50 XADD <stream> * f <100-byte value>` (pipelined). Then a
# source is declared against that backlog (its group created from 0 beforehand, so the backlog
# is its), and the time until `switchyard_source_events_total{kind="RedisStreamSource",
# outcome="sent"}` reaches N is the Switchyard rate. Uses a private Redis on a free port (and
# deletes it), and `target/release/switchyard serve` on a free port with a temporary data dir.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=bench/mq/lib.sh
. "$here/lib.sh"
n="${N:-50000}"
count="${COUNT:-1000}"

work="$(mktemp -d /tmp/switchyard-bench-redis.XXXXXX)"
export REDIS_PORT REDIS_DIR="$work/redis"
REDIS_PORT="$(free_port)"
cleanup() {
    stop_switchyard
    "$root/deploy/redis/local.sh" down || true
    rm -rf "$work"
}
trap cleanup EXIT

build_switchyard
address="$("$root/deploy/redis/local.sh" up)"
cli=(redis-cli -h 127.0.0.1 -p "$REDIS_PORT")
stream="bench"
value="$(head -c 100 /dev/zero | tr '\0' 'x')"

# The group exists before the backlog, from the start: the source reads all of it.
"${cli[@]}" XGROUP CREATE "$stream" bench-group 0 MKSTREAM >/dev/null

start="$(now)"
redis-benchmark -h 127.0.0.1 -p "$REDIS_PORT" -n "$n" -P 50 -c 1 -q XADD "$stream" '*' f "$value" >/dev/null
end="$(now)"
length="$("${cli[@]}" XLEN "$stream")"
[[ "$length" == "$n" ]] || { echo "the stream has $length entries, not $n" >&2; exit 1; }
baseline="$(per_second "$n" "$start" "$end")"

serve_switchyard "$work"
switchyard="$(time_source redisstreamsources RedisStreamSource sources.knative.dev/v1alpha1 "$n" "{\"address\": \"$address\", \"stream\": \"$stream\", \"group\": \"bench-group\", \"count\": $count}")"
sleep 0.5
pending="$("${cli[@]}" XPENDING "$stream" bench-group | head -n 1)"

printf 'entries: %d x 100 B, count (XREADGROUP COUNT): %d\n' "$n" "$count"
printf 'redis-benchmark XADD (-P 50): %10.0f entries/s\n' "$baseline"
printf 'switchyard RedisStreamSource: %10.0f entries/s (into an embedded-log broker, acknowledged)\n' "$switchyard"
printf 'ratio switchyard/baseline:    %10.2f\n' "$(python3 -c "print($switchyard / $baseline)")"
printf 'left pending after the run:   %10s\n' "$pending"
