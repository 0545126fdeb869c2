#!/usr/bin/env bash
# A real Redis server (Debian's redis-server) on 127.0.0.1 for development, tests and CI.
#
#   deploy/redis/local.sh up     # start (idempotent; keeps the data of an earlier `stop`);
#                                # prints the address (redis://127.0.0.1:PORT) once it answers
#   deploy/redis/local.sh stop   # stop, keeping its data (an outage, for tests)
#   deploy/redis/local.sh down   # stop and delete its data
#   deploy/redis/local.sh status # exit 0 when it answers PING
#
# REDIS_PORT (default 16379) is the port; REDIS_DIR (default /tmp/switchyard-redis-$REDIS_PORT)
# holds its data (append-only file), pid and log.
set -euo pipefail
# shellcheck source=deploy/lib.sh
source "$(dirname "$0")/../lib.sh"

port="${REDIS_PORT:-16379}"
dir="${REDIS_DIR:-/tmp/switchyard-redis-$port}"
pidfile="$dir/redis.pid"

log() { printf '%s\n' "$*" >&2; }

install_tools() {
    if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
        log "installing redis-server and redis-tools"
        apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null
    fi
}

answers() {
    [[ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" == "PONG" ]]
}

running() {
    [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

up() {
    install_tools
    if answers; then
        echo "redis://127.0.0.1:$port"
        return
    fi
    if ! running; then
        mkdir -p "$dir"
        # No config file: everything on the command line. Only 127.0.0.1; append-only, so an
        # entry added before `stop` is there after `up`.
        redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" \
            --appendonly yes --appendfsync everysec --save "" \
            --daemonize yes --pidfile "$pidfile" --logfile "$dir/redis.log" \
            --protected-mode yes >/dev/null
    fi
    for _ in $(seq 1 100); do
        if answers; then
            echo "redis://127.0.0.1:$port"
            return
        fi
        sleep 0.1
    done
    log "redis did not answer within 10 s; its log ($dir/redis.log) ends with:"
    tail -n 30 "$dir/redis.log" >&2 || true
    exit 1
}

stop() {
    if running; then
        local pid
        pid="$(cat "$pidfile")"
        # SHUTDOWN NOSAVE: the append-only file already holds every write.
        redis-cli -h 127.0.0.1 -p "$port" shutdown nosave >/dev/null 2>&1 || kill "$pid" 2>/dev/null || true
        wait_or_kill "$pid" 10
    fi
    rm -f "$pidfile"
}

case "${1:-}" in
up) up ;;
stop) stop ;;
down)
    stop
    rm -rf "$dir"
    ;;
status) answers ;;
*)
    log "usage: $0 up|stop|down|status"
    exit 2
    ;;
esac
