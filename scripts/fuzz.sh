#!/usr/bin/env bash
# Runs every fuzz target for a bounded time: ./scripts/fuzz.sh [SECONDS_PER_TARGET] (default 60).
# Needs the nightly toolchain (cargo-fuzz builds with sanitizers); installs cargo-fuzz.
# A crash leaves its input in fuzz/artifacts/<target>/ and fails the script.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-60}"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --version 0.13.2
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
output="$(mktemp)"
trap 'rm -f "$output"' EXIT
for target in $(cargo +nightly fuzz list); do
    mkdir -p "corpus/$target"
    echo "==> fuzz $target for ${seconds}s"
    if ! cargo +nightly fuzz run "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 >"$output" 2>&1; then
        grep -E 'panicked|ERROR|SUMMARY|Test unit written' "$output" || tail -n 40 "$output"
        exit 1
    fi
    grep -E '^#[0-9]+.*DONE' "$output" || true
done
