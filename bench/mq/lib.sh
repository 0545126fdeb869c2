# What the message-queue source benchmarks (bench/mq/<queue>.sh) share, sourced by each after
# it sets `root` (the repository): a release switchyard on a free port with a broker `b`, and
# the timing of a source declared against a backlog until every message is on the broker.
#
#   free_port                    a free TCP port on 127.0.0.1
#   now                          seconds since the epoch, with nanoseconds
#   per_second N START END       N / (END - START)
#   build_switchyard             target/release/switchyard, built when missing
#   serve_switchyard WORK        serves on a free port with data in WORK/data, creates broker
#                                default/b; sets `api` and `server_pid` (stop_switchyard ends it)
#   sent KIND                    switchyard_source_events_total{kind=KIND,outcome="sent"}
#   time_source PLURAL KIND API_VERSION N SPEC
#                                declares source default/bench of KIND with SPEC (JSON; its
#                                sink is added) and prints the rate, from the PUT until N events
#                                are sent (at most $TIMEOUT s, default 600)

bin="$root/target/release/switchyard"
api=""
server_pid=""
server_log=""

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
per_second() { python3 -c "import sys; n, start, end = map(float, sys.argv[1:]); print(n / (end - start))" "$@"; }

build_switchyard() {
    if [[ ! -x "$bin" ]]; then
        echo "building $bin" >&2
        (cd "$root" && cargo build --release --bin switchyard) >&2
    fi
}

serve_switchyard() {
    local work="$1" port
    port="$(free_port)"
    server_log="$work/server.log"
    SWITCHYARD_LOG=warn "$bin" serve --listen "127.0.0.1:$port" --data-dir "$work/data" >"$server_log" 2>&1 &
    server_pid=$!
    api="http://127.0.0.1:$port"
    for _ in $(seq 1 300); do
        curl -fsS "$api/readyz" >/dev/null 2>&1 && break
        sleep 0.1
    done
    curl -fsS -X PUT "$api/v1/namespaces/default/brokers/b" -H 'content-type: application/json' \
        -d '{"spec": {}}' >/dev/null
}

stop_switchyard() {
    if [[ -n "$server_pid" ]]; then
        kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
        server_pid=""
    fi
    return 0
}

sent() {
    curl -fsS "$api/metrics" | awk -v kind="kind=\"$1\"" \
        '/^switchyard_source_events_total\{/ && index($0, kind) && /outcome="sent"/ { s += $NF } END { printf "%d", s }'
}

time_source() {
    local plural="$1" kind="$2" api_version="$3" n="$4" spec="$5" start deadline
    spec="$(python3 -c 'import json, sys
spec = json.loads(sys.argv[1])
spec["sink"] = {"ref": {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "b"}}
print(json.dumps({"apiVersion": sys.argv[2], "kind": sys.argv[3], "spec": spec}))' "$spec" "$api_version" "$kind")"
    start="$(now)"
    curl -fsS -X PUT "$api/v1/namespaces/default/$plural/bench" -H 'content-type: application/json' -d "$spec" >/dev/null
    deadline=$(($(date +%s) + ${TIMEOUT:-600}))
    while (($(sent "$kind") < n)); do
        if (($(date +%s) > deadline)); then
            echo "only $(sent "$kind") of $n sent within ${TIMEOUT:-600} s; server log:" >&2
            tail -n 20 "$server_log" >&2
            return 1
        fi
        sleep 0.05
    done
    per_second "$n" "$start" "$(now)"
}
