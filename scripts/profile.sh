#!/usr/bin/env bash
# Profiles the release `switchyard` binary (built with `debug = 1`, so stacks have names) while
# one benchmark scenario runs: perf samples the server's threads with DWARF call stacks, then
# writes the folded stacks (one line per stack, for flame graph tools such as inferno or
# flamegraph.pl) and the top functions by their own samples. BENCHMARKS.md tells what the last
# profiles showed.
#   ./scripts/profile.sh delivery            # the delivery phase of the delivery scenario
#   ./scripts/profile.sh ingest              # the Switchyard window of the ingest scenario
#   DELAY=2 DURATION=10 ./scripts/profile.sh latency
#   ./scripts/profile.sh kafka-ingest --kafka kafka://127.0.0.1:19092   # further arguments go to the bench
#   SERVER='--log kafka' ./scripts/profile.sh ...   # profile the first server whose command line has this
# Needs perf (linux-perf); writes target/profile/<scenario>.{data,folded,top.txt}.
set -euo pipefail
cd "$(dirname "$0")/.."
scenario="${1:?usage: scripts/profile.sh SCENARIO [BENCH ARGUMENTS] (ingest, delivery, latency, batch, webhook, triggers, ...)}"
shift
command -v perf >/dev/null || { apt-get update -qq && apt-get install -y -qq linux-perf; }
cargo build --release --locked -p switchyard -p switchyard-bench
target="${CARGO_TARGET_DIR:-target}/release"
out="${CARGO_TARGET_DIR:-target}/profile"
mkdir -p "$out"
# When the server's busy phase starts, counted from its start: the ingest scenario first runs
# the no-op baseline for 6 s; the delivery scenario starts its server after the load tool's run
# and first ingests the backlog (under 1 s here), then delivers it for about 4 s.
case "$scenario" in
  ingest) default_delay=7 ;;
  delivery) default_delay=1 ;;
  *) default_delay=2 ;;
esac
"$target/switchyard-bench" --switchyard "$target/switchyard" --only "$scenario" --runs 1 "$@" \
  >"$out/$scenario.table" 2>"$out/$scenario.progress" &
bench=$!
pid=""
for _ in $(seq 1 600); do
  # The bench's own child: other servers may run the same binary.
  pid=$(pgrep -P "$bench" -f "switchyard serve.*${SERVER:-}" | head -1 || true)
  [ -n "$pid" ] && break
  sleep 0.1
done
[ -n "$pid" ] || { echo "the server did not start; see $out/$scenario.progress" >&2; exit 1; }
sleep "${DELAY:-$default_delay}"
perf record -o "$out/$scenario.data" -F 499 --call-graph dwarf,16384 -p "$pid" -- sleep "${DURATION:-5}" 2>/dev/null \
  || echo "perf stopped early (the server exited before the window ended)" >&2
wait "$bench" || true
perf script -i "$out/$scenario.data" 2>/dev/null | python3 scripts/fold_stacks.py >"$out/$scenario.folded"
perf report -i "$out/$scenario.data" --no-children --stdio --sort sym --no-call-graph 2>/dev/null \
  | grep -v -e '^#' -e '^$' | sed -n 1,60p >"$out/$scenario.top.txt"
grep "\[$scenario\]" "$out/$scenario.progress" || true
echo "wrote $out/$scenario.data, $out/$scenario.folded (folded stacks) and $out/$scenario.top.txt"
