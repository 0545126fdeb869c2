#!/usr/bin/env bash
# Installs the CloudEvents SDKs the interop matrix (tests/tests/interop.rs) drives, each pinned,
# each skipped when already in place: Python `cloudevents` 2.2.0 (pip), JavaScript `cloudevents`
# 10.0.0 (npm, from package-lock.json), Go sdk-go v2.16.2 (go.sum; the module and build caches
# live outside the clone); Standard Webhooks' Python and npm libraries for the signed-delivery
# tests; and PyJWT for the identified-delivery tests. Safe to run again.
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

# Standard Webhooks' reference libraries, which verify signed deliveries
# (tests/tests/signed_deliveries.rs): Python `standardwebhooks` 1.3.0 in a venv, npm
# `standardwebhooks` 1.3.0 from standardwebhooks/package-lock.json, both under the cache below.
webhooks="$HOME/.cache/switchyard/standardwebhooks"
if ! "$webhooks/venv/bin/python" -c 'import importlib.metadata as m, sys; sys.exit(m.version("standardwebhooks") != "1.3.0")' 2>/dev/null; then
    python3 -m venv "$webhooks/venv" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$webhooks/venv"; }
    "$webhooks/venv/bin/pip" install --quiet --disable-pip-version-check 'standardwebhooks==1.3.0'
fi
if ! grep -qs '"version": "1.3.0"' "$webhooks/js/node_modules/standardwebhooks/package.json"; then
    mkdir -p "$webhooks/js" && cp standardwebhooks/package.json standardwebhooks/package-lock.json "$webhooks/js/"
    (cd "$webhooks/js" && npm ci --no-audit --no-fund --loglevel=error)
fi

# PyJWT, which verifies identified deliveries' tokens (tests/tests/identified_deliveries.rs):
# PyJWT 2.10.1 with cryptography 44.0.2 (for ES256) in a venv under the cache below.
pyjwt="$HOME/.cache/switchyard/pyjwt"
if ! "$pyjwt/venv/bin/python" -c 'import importlib.metadata as m, sys; sys.exit(m.version("PyJWT") != "2.10.1" or m.version("cryptography") != "44.0.2")' 2>/dev/null; then
    python3 -m venv "$pyjwt/venv" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$pyjwt/venv"; }
    "$pyjwt/venv/bin/pip" install --quiet --disable-pip-version-check 'PyJWT==2.10.1' 'cryptography==44.0.2'
fi

command -v go >/dev/null 2>&1 || apt_install golang-go
mkdir -p "$root/target/interop"
(cd go && go build -o "$root/target/interop/go-driver" .)
