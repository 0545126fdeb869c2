#!/usr/bin/env bash
# A real Mosquitto (Debian's `mosquitto` package, MQTT 5.0 and 3.1.1) on 127.0.0.1 for
# development, tests and CI. No Docker.
#
#   deploy/mosquitto/local.sh up     # start (idempotent; keeps the data of an earlier `stop`);
#                                    # prints the address (host:port) once it answers
#   deploy/mosquitto/local.sh stop   # stop, keeping its data (an outage, for tests)
#   deploy/mosquitto/local.sh down   # stop and delete its data
#   deploy/mosquitto/local.sh status # exit 0 when it answers a publish
#
# MQTT_PORT (default 11883) is the listener's port. MQTT_DIR (default
# /tmp/switchyard-mosquitto-$MQTT_PORT) holds its configuration, persistence file, pid and log.
# Persistence is on: sessions and the messages queued for them survive `stop` and `up`, as the
# MqttSource's persistent sessions need.
set -euo pipefail
# shellcheck source=deploy/lib.sh
source "$(dirname "$0")/../lib.sh"

port="${MQTT_PORT:-11883}"
dir="${MQTT_DIR:-/tmp/switchyard-mosquitto-$port}"
pidfile="$dir/mosquitto.pid"
mosquitto_bin="$(command -v mosquitto || echo /usr/sbin/mosquitto)"

log() { printf '%s\n' "$*" >&2; }

install_tools() {
    if [[ ! -x "$mosquitto_bin" ]] || ! command -v mosquitto_pub >/dev/null 2>&1; then
        log "installing mosquitto and mosquitto-clients"
        apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto mosquitto-clients >/dev/null
        mosquitto_bin="$(command -v mosquitto || echo /usr/sbin/mosquitto)"
    fi
}

answers() {
    timeout 5 mosquitto_pub -h 127.0.0.1 -p "$port" -q 0 -t switchyard/probe -m up >/dev/null 2>&1
}

running() {
    [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

configure() {
    mkdir -p "$dir/data"
    # max_queued_messages: a session holds every message published while its source is down
    # (the tests queue hundreds, the benchmark tens of thousands). max_inflight_messages is the
    # server's own bound for 3.1.1 clients (MQTT 5 clients say theirs: Receive Maximum).
    cat >"$dir/mosquitto.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous true
user $(id -un)
persistence true
persistence_location $dir/data/
persistent_client_expiration 7d
max_queued_messages 1000000
max_queued_bytes 0
max_inflight_messages 100
max_keepalive 65535
log_dest file $dir/mosquitto.log
log_type error
log_type warning
log_type notice
CONF
}

launch() {
    log "starting mosquitto on 127.0.0.1:$port (data in $dir)"
    configure
    nohup "$mosquitto_bin" -c "$dir/mosquitto.conf" >>"$dir/stdout.log" 2>&1 </dev/null &
    echo $! >"$pidfile"
}

up() {
    if running && answers; then
        echo "127.0.0.1:$port"
        return
    fi
    install_tools
    if running; then
        log "mosquitto is starting (pid $(cat "$pidfile")); waiting for it"
    else
        launch
    fi
    for _ in $(seq 1 50); do
        if answers; then
            echo "127.0.0.1:$port"
            return
        fi
        if ! running; then
            log "mosquitto exited; its log ($dir/mosquitto.log) ends with:"
            tail -n 30 "$dir/mosquitto.log" "$dir/stdout.log" >&2 || true
            exit 1
        fi
        sleep 0.2
    done
    log "mosquitto did not answer within 10 s; see $dir/mosquitto.log"
    exit 1
}

stop() {
    if running; then
        local pid
        pid="$(cat "$pidfile")"
        # SIGTERM: mosquitto writes its persistence file (sessions, queued messages) and exits.
        kill "$pid" 2>/dev/null || true
        wait_or_kill "$pid" 10
    fi
    rm -f "$pidfile"
}

down() {
    stop
    rm -rf "$dir"
}

case "${1:-}" in
    up) up ;;
    stop) stop ;;
    down) down ;;
    status) answers ;;
    *)
        echo "usage: $0 up|stop|down|status" >&2
        exit 2
        ;;
esac
