#!/usr/bin/env bash
# A real, single RabbitMQ node on 127.0.0.1 for development, tests and CI: Debian's
# `rabbitmq-server` (installed with apt-get when missing) run by hand, no systemd, no Docker.
#
#   deploy/rabbitmq/local.sh up     # start (idempotent; keeps the data of an earlier `stop`);
#                                   # prints the AMQP URI once it answers
#   deploy/rabbitmq/local.sh stop   # stop, keeping its data (an outage, for tests)
#   deploy/rabbitmq/local.sh down   # stop and delete its data
#   deploy/rabbitmq/local.sh status # exit 0 when it answers AMQP
#
# RABBITMQ_PORT (default 15673) is the AMQP port; RABBITMQ_DIST_PORT (default RABBITMQ_PORT +
# 10000) the Erlang distribution port, also on 127.0.0.1. RABBITMQ_DIR (default
# /tmp/switchyard-rabbitmq-$RABBITMQ_PORT) holds its data, logs, pid and Erlang cookie. The node
# is named switchyard-$RABBITMQ_PORT@localhost, so several instances (a private one for an
# outage test) run side by side. They register with one epmd (the Erlang port mapper, bound to
# 127.0.0.1), which the first node starts and which stays running.
set -euo pipefail
# shellcheck source=deploy/lib.sh
source "$(dirname "$0")/../lib.sh"

port="${RABBITMQ_PORT:-15673}"
dist_port="${RABBITMQ_DIST_PORT:-$((port + 10000))}"
dir="${RABBITMQ_DIR:-/tmp/switchyard-rabbitmq-$port}"
pidfile="$dir/rabbitmq.pid"
bin=/usr/lib/rabbitmq/bin

log() { printf '%s\n' "$*" >&2; }

install_server() {
    if [[ ! -x "$bin/rabbitmq-server" ]]; then
        log "installing rabbitmq-server"
        apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
        # The package starts a node of its own where systemd runs; this one is run by hand.
        command -v systemctl >/dev/null 2>&1 && systemctl disable --now rabbitmq-server >/dev/null 2>&1 || true
    fi
}

# The node's environment: everything under $dir, listening on 127.0.0.1 only, no plugins
# (the management plugin alone doubles the start-up time).
node_env() {
    export HOME="$dir" \
        RABBITMQ_CONF_ENV_FILE=/dev/null \
        RABBITMQ_NODENAME="switchyard-$port@localhost" \
        RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
        RABBITMQ_NODE_PORT="$port" \
        RABBITMQ_DIST_PORT="$dist_port" \
        RABBITMQ_MNESIA_BASE="$dir/mnesia" \
        RABBITMQ_LOG_BASE="$dir/log" \
        RABBITMQ_PID_FILE="$pidfile" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
        RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf" \
        RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config" \
        ERL_EPMD_ADDRESS=127.0.0.1
}

# A RabbitMQ node answers the AMQP 0-9-1 protocol header with a connection.start method frame
# (frame type 1) once it has booted: its listener opens last.
answers() {
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port && printf 'AMQP\x00\x00\x09\x01' >&3 && head -c 1 <&3" \
        2>/dev/null | od -An -tx1 | grep -q '01'
}

running() {
    [[ -f "$dir/launcher.pid" ]] && kill -0 "$(cat "$dir/launcher.pid")" 2>/dev/null
}

up() {
    if running && answers; then
        echo "amqp://guest:guest@127.0.0.1:$port/%2f"
        return
    fi
    install_server
    if running; then
        log "a rabbitmq node is starting (pid $(cat "$dir/launcher.pid")); waiting for it"
    else
        mkdir -p "$dir/log" "$dir/mnesia"
        echo '[].' >"$dir/enabled_plugins"
        # guest may connect from 127.0.0.1 only, which is where every client is (the listener is
        # RABBITMQ_NODE_IP_ADDRESS:RABBITMQ_NODE_PORT).
        echo 'loopback_users.guest = true' >"$dir/rabbitmq.conf"
        echo '[].' >"$dir/advanced.config"
        log "starting rabbitmq on 127.0.0.1:$port (data in $dir)"
        # setsid: the node does not belong to the caller's process group, so that a test run's
        # end (or a Ctrl-C) does not take the shared instance with it.
        # exec: the recorded pid is the session's leader, so `stop` signals its whole group.
        (node_env && exec setsid nohup "$bin/rabbitmq-server" >>"$dir/rabbitmq.log" 2>&1 </dev/null) &
        echo $! >"$dir/launcher.pid"
    fi
    for _ in $(seq 1 300); do
        if answers; then
            echo "amqp://guest:guest@127.0.0.1:$port/%2f"
            return
        fi
        if ! running; then
            log "rabbitmq exited; its log ($dir/rabbitmq.log) ends with:"
            tail -n 30 "$dir/rabbitmq.log" >&2 || true
            exit 1
        fi
        sleep 0.1
    done
    log "rabbitmq did not answer within 30 s; see $dir/rabbitmq.log"
    exit 1
}

stop() {
    if running; then
        local pid
        pid="$(cat "$dir/launcher.pid")"
        # The launcher script runs the Erlang VM as a child; stopping the session takes both.
        # SIGTERM makes the VM shut down cleanly (messages on disk stay).
        kill -- "-$pid" 2>/dev/null || true
        wait_or_kill "$pid" 10 "-$pid"
    fi
    rm -f "$dir/launcher.pid" "$pidfile"
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
