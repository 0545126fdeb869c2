#!/usr/bin/env bash
# Installs the CloudEvents SDKs the interop matrix (tests/tests/interop.rs) drives, each pinned,
# each skipped when already in place: Python `cloudevents` 2.2.0 (pip), JavaScript `cloudevents`
# 10.0.0 (npm, from package-lock.json), Go sdk-go v2.16.2 (go.sum; the module and build caches
# live outside the clone). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")"
root="$(cd ../.. && pwd)"

apt_install() {
    [ -n "${APT_UPDATED:-}" ] || { apt-get update -qq; APT_UPDATED=1; }
    apt-get install -y -qq "$@"
}

if ! python3 -c 'import cloudevents, sys; sys.exit(0 if cloudevents.__version__ == "2.2.0" else 1)' 2>/dev/null; then
    python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
    python3 -m pip install --quiet --disable-pip-version-check 'cloudevents==2.2.0' \
        || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages 'cloudevents==2.2.0'
fi

command -v npm >/dev/null 2>&1 || apt_install nodejs npm
if ! grep -qs '"version": "10.0.0"' js/node_modules/cloudevents/package.json; then
    (cd js && npm ci --no-audit --no-fund --loglevel=error)
fi

command -v go >/dev/null 2>&1 || apt_install golang-go
mkdir -p "$root/target/interop"
(cd go && go build -o "$root/target/interop/go-driver" .)
