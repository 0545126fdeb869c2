#!/usr/bin/env bash
# NatsSource (JetStream) throughput: how fast Switchyard moves a stream's backlog into an
# embedded-log broker, against how fast NATS itself takes the messages.
#
#   bench/mq/nats.sh                                # N=50000 messages of 100 bytes
#   N=200000 MAX_ACK_PENDING=10000 bench/mq/nats.sh
#
# Baseline: `nats bench js pub async` (the NATS CLI, natscli; built once with `go install` into
# ~/.cache/switchyard/natscli-<version> when missing) publishing N messages into a file stream, each publish
# acknowledged by the server. Then a source is declared against that backlog (a durable pull
# consumer from the stream's start, `maxAckPending` in flight), and the time until
# `switchyard_source_events_total{kind="NatsSource",outcome="sent"}` reaches N is the Switchyard
# rate. Uses a private nats-server on a free port (and deletes it), and
# `target/release/switchyard serve` on a free port with a temporary data dir.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=bench/mq/lib.sh
. "$here/lib.sh"
n="${N:-50000}"
max_ack_pending="${MAX_ACK_PENDING:-1000}"
natscli_version="v0.5.1"
nats="${NATS_CLI:-$HOME/.cache/switchyard/natscli-$natscli_version/nats}"

work="$(mktemp -d /tmp/switchyard-bench-nats.XXXXXX)"
export NATS_PORT NATS_DIR="$work/nats"
NATS_PORT="$(free_port)"
cleanup() {
    stop_switchyard
    "$root/deploy/nats/local.sh" down || true
    rm -rf "$work"
}
trap cleanup EXIT

if [[ ! -x "$nats" ]]; then
    echo "building the nats CLI into $(dirname "$nats")" >&2
    mkdir -p "$(dirname "$nats")"
    GOBIN="$(dirname "$nats")" go install "github.com/nats-io/natscli/nats@$natscli_version" >&2
fi
build_switchyard
url="$("$root/deploy/nats/local.sh" up)"
stream="bench"
subject="bench.messages"

"$nats" -s "$url" stream add "$stream" --subjects "$subject" --storage file --retention limits \
    --discard old --max-msgs=-1 --max-bytes=-1 --max-age=0 --max-msg-size=-1 --dupe-window=2m \
    --replicas 1 --no-allow-rollup --no-deny-delete --no-deny-purge --defaults >/dev/null

start="$(now)"
"$nats" -s "$url" bench js pub async "$subject" --stream "$stream" --msgs "$n" --size 100 --batch 500 \
    --no-progress >"$work/bench.txt" 2>&1 || { cat "$work/bench.txt" >&2; exit 1; }
end="$(now)"
stored="$("$nats" -s "$url" stream info "$stream" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"]["messages"])')"
[[ "$stored" == "$n" ]] || { echo "the stream has $stored messages, not $n" >&2; cat "$work/bench.txt" >&2; exit 1; }
baseline="$(per_second "$n" "$start" "$end")"

serve_switchyard "$work"
switchyard="$(time_source natssources NatsSource sources.switchyard.dev/v1alpha1 "$n" "{\"servers\": [\"$url\"], \"subject\": \"$subject\", \"jetstream\": {\"stream\": \"$stream\", \"durable\": \"bench\", \"maxAckPending\": $max_ack_pending}}")"
sleep 1
pending="$("$nats" -s "$url" consumer info "$stream" bench --json | python3 -c 'import json,sys; i=json.load(sys.stdin); print(i["num_ack_pending"], "unacknowledged,", i["num_pending"], "undelivered")')"

printf 'messages: %d x 100 B, maxAckPending: %d\n' "$n" "$max_ack_pending"
printf 'nats bench js pub async:  %10.0f msgs/s (stored and acknowledged by JetStream)\n' "$baseline"
printf 'switchyard NatsSource:    %10.0f msgs/s (into an embedded-log broker, acknowledged)\n' "$switchyard"
printf 'ratio switchyard/baseline: %9.2f\n' "$(python3 -c "print($switchyard / $baseline)")"
printf 'consumer after the run:   %s\n' "$pending"
