#!/usr/bin/env bash
# A real, single NATS server with JetStream on 127.0.0.1 for development, tests and CI: Debian's
# `nats-server` (installed with apt-get when missing), no Docker.
#
#   deploy/nats/local.sh up     # start (idempotent; keeps the data of an earlier `stop`);
#                               # prints the server's URL once it answers
#   deploy/nats/local.sh stop   # stop, keeping its data (an outage, for tests)
#   deploy/nats/local.sh down   # stop and delete its data
#   deploy/nats/local.sh status # exit 0 when it answers
#
# NATS_PORT (default 14222) is the client port. NATS_DIR (default /tmp/switchyard-nats-$NATS_PORT)
# holds the JetStream store, pid and log.
set -euo pipefail
# shellcheck source=deploy/lib.sh
source "$(dirname "$0")/../lib.sh"

port="${NATS_PORT:-14222}"
dir="${NATS_DIR:-/tmp/switchyard-nats-$port}"
pidfile="$dir/nats.pid"

log() { printf '%s\n' "$*" >&2; }

install_server() {
    if ! command -v nats-server >/dev/null 2>&1; then
        log "installing nats-server"
        apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server >/dev/null
    fi
}

# A NATS server greets every connection with an INFO line.
answers() {
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port && head -c 4 <&3" 2>/dev/null | grep -q '^INFO'
}

running() {
    [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

up() {
    # Tests starting the shared server at once: one starts it, the others wait for it.
    exec 9>"$dir.lock"
    flock 9
    if running && answers; then
        echo "nats://127.0.0.1:$port"
        return
    fi
    install_server
    if running; then
        log "a nats-server is starting (pid $(cat "$pidfile")); waiting for it"
    else
        mkdir -p "$dir/jetstream"
        log "starting nats-server on 127.0.0.1:$port (data in $dir)"
        # setsid: the server does not belong to the caller's process group, so that a test
        # run's end (or a Ctrl-C) does not take the shared instance with it.
        setsid nohup nats-server -js -a 127.0.0.1 -p "$port" -sd "$dir/jetstream" \
            >>"$dir/nats.log" 2>&1 </dev/null 9>&- &
        echo $! >"$pidfile"
    fi
    for _ in $(seq 1 100); do
        if answers; then
            echo "nats://127.0.0.1:$port"
            return
        fi
        if ! running; then
            log "nats-server exited; its log ($dir/nats.log) ends with:"
            tail -n 30 "$dir/nats.log" >&2 || true
            exit 1
        fi
        sleep 0.1
    done
    log "nats-server did not answer within 10 s; see $dir/nats.log"
    exit 1
}

stop() {
    if running; then
        local pid
        pid="$(cat "$pidfile")"
        kill "$pid" 2>/dev/null || true
        wait_or_kill "$pid" 5
    fi
    rm -f "$pidfile"
}

down() {
    stop
    rm -rf "$dir" "$dir.lock"
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
