#!/usr/bin/env bash
# A real Kubernetes control plane (kube-apiserver + etcd, no kubelet, no scheduler) on 127.0.0.1
# for development, tests and CI: enough to validate manifests with server-side dry-run, create
# objects, watch them, and run controllers against. No Docker, no downloads of prebuilt binaries:
# kube-apiserver, kubectl and etcd are built from the Go module proxy once, then cached.
#
#   deploy/kubernetes/local.sh build   # build (once) and print the folder holding kube-apiserver,
#                                      # kubectl and etcd (~7 min of 2 cores the first time)
#   deploy/kubernetes/local.sh up      # start (idempotent; a fresh etcd each time it starts) and
#                                      # print the path of an admin kubeconfig once /readyz answers
#   deploy/kubernetes/local.sh down    # stop both and delete their data
#   deploy/kubernetes/local.sh status  # exit 0 when /readyz answers
#
# K8S_PORT (default 16443) is the API server's HTTPS port; etcd listens on K8S_PORT + 1 (client)
# and K8S_PORT + 2 (peer). K8S_DIR (default /tmp/switchyard-k8s-$K8S_PORT) holds certificates,
# keys, data, pids and logs; besides `kubeconfig` it has `env` (KUBECONFIG, KUBE_API, KUBE_TOKEN,
# KUBE_CA) to source. KAS_EXTRA_FLAGS adds flags to kube-apiserver (e.g. feature gates).
set -euo pipefail
# shellcheck source=deploy/lib.sh
source "$(dirname "$0")/../lib.sh"

k8s_version="1.37.2" # k8s.io/kubernetes v1.x.y <-> its staging modules (k8s.io/api, ...) v0.x.y
etcd_version="3.7.3"
cache="$HOME/.cache/switchyard/k8s-v$k8s_version-etcd-v$etcd_version"
port="${K8S_PORT:-16443}"
etcd_port="$((port + 1))"
etcd_peer_port="$((port + 2))"
dir="${K8S_DIR:-/tmp/switchyard-k8s-$port}"
token_file="$dir/admin-token"

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }

install_tools() {
    local missing=()
    command -v go >/dev/null 2>&1 || missing+=(golang-go)
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)
    command -v curl >/dev/null 2>&1 || missing+=(curl)
    command -v python3 >/dev/null 2>&1 || missing+=(python3)
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

built() {
    [[ -x "$cache/kube-apiserver" && -x "$cache/kubectl" && -x "$cache/etcd" ]]
}

# Go module builds at low priority: the first one takes minutes of both cores.
build() {
    if built; then
        echo "$cache"
        return
    fi
    install_tools
    mkdir -p "$cache"
    # One build at a time (two checks starting together): the second waits, then finds the binaries.
    exec 9>"$cache/.build.lock"
    flock 9
    if built; then
        echo "$cache"
        return
    fi
    local work
    work="$(mktemp -d)"
    # shellcheck disable=SC2064 # expand now: `work` is local
    trap "rm -rf '$work'" RETURN
    if [[ ! -x "$cache/etcd" ]]; then
        mkdir -p "$work/etcd"
        printf 'module etcdbuild\n\ngo 1.26.0\n\nrequire go.etcd.io/etcd/server/v3 v%s\n' "$etcd_version" \
            >"$work/etcd/go.mod"
        printf '//go:build tools\n\npackage etcdbuild\n\nimport _ "go.etcd.io/etcd/server/v3"\n' >"$work/etcd/tools.go"
        log "etcd v$etcd_version: resolving modules"
        (cd "$work/etcd" && nice -n 19 go mod tidy)
        log "etcd v$etcd_version: building"
        (cd "$work/etcd" && nice -n 19 go build -trimpath -ldflags="-s -w" -o "$cache/etcd.tmp" \
            go.etcd.io/etcd/server/v3)
        mv "$cache/etcd.tmp" "$cache/etcd"
    fi
    if [[ ! -x "$cache/kube-apiserver" || ! -x "$cache/kubectl" ]]; then
        mkdir -p "$work/k8s"
        local source staging minor
        source="$(go mod download -json "k8s.io/kubernetes@v$k8s_version" \
            | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')"
        # k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with
        # ./staging/...; outside its repository each must be pinned to the matching v0.x.y.
        staging="$(awk '/^require/,/^\)/' "$source/go.mod" | awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" {print $1}')"
        minor="${k8s_version#*.}"
        {
            printf 'module k8sbuild\n\ngo 1.26.0\n\ngodebug default=go1.26\n\nrequire k8s.io/kubernetes v%s\n\nreplace (\n' \
                "$k8s_version"
            for module in $staging; do
                printf '\t%s => %s v0.%s\n' "$module" "$module" "$minor"
            done
            printf ')\n'
        } >"$work/k8s/go.mod"
        printf '//go:build tools\n\npackage k8sbuild\n\nimport (\n\t_ "k8s.io/kubernetes/cmd/kube-apiserver"\n\t_ "k8s.io/kubernetes/cmd/kubectl"\n)\n' \
            >"$work/k8s/tools.go"
        log "kubernetes v$k8s_version: resolving modules"
        (cd "$work/k8s" && nice -n 19 go mod tidy)
        local version_pkg=k8s.io/component-base/version
        local ldflags="-s -w -X $version_pkg.gitVersion=v$k8s_version -X $version_pkg.gitMajor=${k8s_version%%.*}"
        ldflags+=" -X $version_pkg.gitMinor=$(echo "$k8s_version" | cut -d. -f2) -X $version_pkg.gitTreeState=clean"
        local binary
        for binary in kube-apiserver kubectl; do
            [[ -x "$cache/$binary" ]] && continue
            log "kubernetes v$k8s_version: building $binary"
            (cd "$work/k8s" && nice -n 19 go build -trimpath -ldflags="$ldflags" -o "$cache/$binary.tmp" \
                "k8s.io/kubernetes/cmd/$binary")
            mv "$cache/$binary.tmp" "$cache/$binary"
        done
    fi
    log "built into $cache"
    echo "$cache"
}

token() {
    cat "$token_file" 2>/dev/null || true
}

answers() {
    [[ -f "$token_file" ]] || return 1
    curl -skf --max-time 2 -H "Authorization: Bearer $(token)" "https://127.0.0.1:$port/readyz" >/dev/null 2>&1
}

running() {
    local name="$1"
    [[ -f "$dir/$name.pid" ]] && kill -0 "$(cat "$dir/$name.pid")" 2>/dev/null
}

up() {
    # Two `up`s at once: the second waits for the first, then finds the server answering.
    exec 8>"$dir.lock"
    flock 8
    if running kube-apiserver && answers; then
        echo "$dir/kubeconfig"
        return
    fi
    build >/dev/null
    # A half-started pair (one died, or a stale pid) is replaced whole: etcd starts empty.
    stop
    rm -rf "$dir/etcd"
    mkdir -p "$dir/certs" "$dir/etcd"
    chmod 700 "$dir" "$dir/etcd"
    [[ -f "$dir/sa.key" ]] || openssl genrsa -out "$dir/sa.key" 2048 2>/dev/null
    [[ -f "$token_file" ]] || python3 -c 'import secrets; print(secrets.token_hex(24))' >"$token_file"
    chmod 600 "$token_file" "$dir/sa.key"
    # A static-token admin in system:masters: this control plane exists for tests on loopback.
    echo "$(token),switchyard-admin,switchyard-admin,system:masters" >"$dir/tokens.csv"
    log "starting etcd v$etcd_version on 127.0.0.1:$etcd_port (data in $dir)"
    nohup "$cache/etcd" --name local --data-dir "$dir/etcd" --unsafe-no-fsync --log-level=warn \
        --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
        --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" \
        --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
        --initial-cluster "local=http://127.0.0.1:$etcd_peer_port" >"$dir/etcd.log" 2>&1 </dev/null 8>&- &
    echo $! >"$dir/etcd.pid"
    log "starting kube-apiserver v$k8s_version on https://127.0.0.1:$port"
    # kube-apiserver generates a self-signed serving certificate for 127.0.0.1 into --cert-dir.
    # shellcheck disable=SC2086 # KAS_EXTRA_FLAGS is a list of flags
    nohup "$cache/kube-apiserver" --etcd-servers="http://127.0.0.1:$etcd_port" \
        --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$port" \
        --cert-dir="$dir/certs" --endpoint-reconciler-type=none \
        --service-account-issuer=https://kubernetes.default.svc --service-account-key-file="$dir/sa.key" \
        --service-account-signing-key-file="$dir/sa.key" --token-auth-file="$dir/tokens.csv" \
        --authorization-mode=RBAC --service-cluster-ip-range=10.96.0.0/16 \
        --disable-admission-plugins=ServiceAccount --enable-priority-and-fairness=false \
        ${KAS_EXTRA_FLAGS:-} >"$dir/kube-apiserver.log" 2>&1 </dev/null 8>&- &
    echo $! >"$dir/kube-apiserver.pid"
    for _ in $(seq 1 600); do
        if answers; then
            write_config
            log "ready"
            echo "$dir/kubeconfig"
            return
        fi
        local name
        for name in etcd kube-apiserver; do
            if ! running "$name"; then
                log "$name exited; its log ($dir/$name.log) ends with:"
                tail -n 20 "$dir/$name.log" >&2 || true
                stop
                exit 1
            fi
        done
        sleep 0.1
    done
    log "kube-apiserver was not ready within 60 s; see $dir/kube-apiserver.log"
    stop
    exit 1
}

write_config() {
    cat >"$dir/kubeconfig" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
  - name: switchyard-local
    cluster:
      server: https://127.0.0.1:$port
      certificate-authority: $dir/certs/apiserver.crt
users:
  - name: switchyard-admin
    user:
      token: $(token)
contexts:
  - name: switchyard-local
    context:
      cluster: switchyard-local
      user: switchyard-admin
current-context: switchyard-local
KUBECONFIG
    chmod 600 "$dir/kubeconfig"
    cat >"$dir/env" <<ENV
export KUBECONFIG=$dir/kubeconfig
export KUBE_API=https://127.0.0.1:$port
export KUBE_TOKEN=$(token)
export KUBE_CA=$dir/certs/apiserver.crt
ENV
}

stop() {
    local name pid
    for name in kube-apiserver etcd; do
        [[ -f "$dir/$name.pid" ]] || continue
        pid="$(cat "$dir/$name.pid")"
        kill "$pid" 2>/dev/null || true
        wait_or_kill "$pid" 5
        rm -f "$dir/$name.pid"
    done
}

down() {
    stop
    rm -rf "$dir"
}

case "${1:-}" in
    build) build ;;
    up) up ;;
    down) down ;;
    status) answers ;;
    *)
        echo "usage: $0 build|up|down|status" >&2
        exit 2
        ;;
esac
