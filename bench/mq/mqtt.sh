#!/usr/bin/env bash
# MqttSource throughput: how fast Switchyard moves a persistent session's backlog into an
# embedded-log broker, against how fast Mosquitto itself takes the messages.
#
#   bench/mq/mqtt.sh                               # N=50000 messages of 100 bytes
#   N=200000 RECEIVE_MAXIMUM=1000 bench/mq/mqtt.sh
#
# A non-retained MQTT message reaches only the sessions subscribed when it is published, so the
# source's persistent session is made first: `mosquitto_sub` connects with the source's client
# id, subscribes at QoS 1 with clean start off and a session expiry, and leaves.
# Baseline: `mosquitto_pub -l` (QoS 1, MQTT 5) publishing N lines of 100 bytes from stdin (in
# chunks of 20,000, see below), each acknowledged by the server; they queue in that session. Then the source is declared with the
# same client id (the server hands it the session and its backlog), and the time until
# `switchyard_source_events_total{kind="MqttSource",outcome="sent"}` reaches N is the Switchyard
# rate. Uses a private Mosquitto on a free port (deleted afterwards), and
# `target/release/switchyard serve` on a free port with a temporary data dir.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=bench/mq/lib.sh
. "$here/lib.sh"
n="${N:-50000}"
receive_maximum="${RECEIVE_MAXIMUM:-1000}"

work="$(mktemp -d /tmp/switchyard-bench-mqtt.XXXXXX)"
export MQTT_PORT MQTT_DIR="$work/mosquitto"
MQTT_PORT="$(free_port)"
cleanup() {
    stop_switchyard
    "$root/deploy/mosquitto/local.sh" down || true
    [[ -n "${KEEP:-}" ]] || rm -rf "$work"
}
trap cleanup EXIT

build_switchyard
address="$("$root/deploy/mosquitto/local.sh" up)"
host="${address%:*}"
topic="bench/messages"
client_id="switchyard-bench"

# The source's persistent session, subscribed (-E: leave once subscribed).
mosquitto_sub -h "$host" -p "$MQTT_PORT" -V mqttv5 -i "$client_id" -c -x 86400 -q 1 -t "$topic" -E

# Mosquitto 2.0.11's `mosquitto_pub -l` loses messages when stdin ends while many are still
# queued in the client (measured: ~69,000 of 200,000 arrived): it is run on chunks of at most
# 20,000 lines, which arrive whole.
chunk=20000
python3 -c "
line = ('x' * 100 + '\n').encode()
left, i = $n, 0
while left > 0:
    size = min(left, $chunk)
    open('$work/lines.%05d' % i, 'wb').write(line * size)
    left, i = left - size, i + 1
"
start="$(now)"
for lines in "$work"/lines.*; do
    mosquitto_pub -h "$host" -p "$MQTT_PORT" -V mqttv5 -i switchyard-bench-publisher -q 1 -t "$topic" -l <"$lines"
done
end="$(now)"
baseline="$(per_second "$n" "$start" "$end")"

serve_switchyard "$work"
switchyard="$(time_source mqttsources MqttSource sources.switchyard.dev/v1alpha1 "$n" "{\"address\": \"mqtt://$address\", \"topics\": [\"$topic\"], \"clientId\": \"$client_id\", \"receiveMaximum\": $receive_maximum}")"

printf 'messages: %d x 100 B, receiveMaximum: %d\n' "$n" "$receive_maximum"
printf 'mosquitto_pub -l (QoS 1):  %10.0f msgs/s (acknowledged by Mosquitto)\n' "$baseline"
printf 'switchyard MqttSource:     %10.0f msgs/s (into an embedded-log broker, acknowledged)\n' "$switchyard"
printf 'ratio switchyard/baseline: %10.2f\n' "$(python3 -c "print($switchyard / $baseline)")"
printf 'sent (redeliveries count): %10d\n' "$(sent MqttSource)"
