# shellcheck shell=bash
# Sourced by deploy/<server>/local.sh: what stopping a local server has in common.

# After the caller asked process PID to stop (each server has its own polite way), waits up to
# SECONDS for it to exit, then sends SIGKILL to TARGET: PID itself, or "-PGID" for a process
# group whose other members may outlive PID. SIGKILL to a process already gone does nothing.
wait_or_kill() {
    local pid="$1" seconds="$2" target="${3:-$1}"
    for _ in $(seq 1 "$((seconds * 10))"); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 -- "$target" 2>/dev/null || true
}
