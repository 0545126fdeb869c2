#!/usr/bin/env bash
# Builds the Switchyard image (deploy/image/Containerfile) with the container tool this machine
# has: docker when its engine answers, else buildah (rootful, `vfs` storage and `chroot`
# isolation, which work where overlay and user namespaces do not), else podman, else buildah
# installed from Debian. Prints the image name on stdout, progress on stderr.
#
#   deploy/image/build.sh                         # build the binary in a Rust container (needs a registry)
#   deploy/image/build.sh --prebuilt target/release/switchyard --runtime local
#                                                 # no registry: this binary, on a base made here
#
#   --tag NAME         image name (default localhost/switchyard:<version>)
#   --prebuilt BINARY  ship this binary (debug info stripped; symbols stay for backtraces and
#                      perf) instead of building it in the `source` stage (target from-prebuilt)
#   --runtime IMAGE    the runtime base; `local` makes one from this machine's glibc and
#                      libgcc_s (the same files distroless `cc` carries), cached as
#                      localhost/switchyard-runtime:glibc-<version>
#
# CONTAINER_TOOL=docker|podman|buildah picks the tool; with buildah, BUILDAH_STORAGE_DRIVER
# (default vfs) and BUILDAH_ISOLATION (default chroot) apply to every buildah command.
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
containerfile="$root/deploy/image/Containerfile"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)"
tag="localhost/switchyard:$version"
prebuilt=""
runtime=""

log() { printf '%s\n' "$*" >&2; }
fail() { log "build.sh: $*"; exit 2; }

while (($#)); do
    case "$1" in
        --tag) tag="${2:?--tag needs a name}"; shift 2 ;;
        --prebuilt) prebuilt="${2:?--prebuilt needs a binary}"; shift 2 ;;
        --runtime) runtime="${2:?--runtime needs an image or local}"; shift 2 ;;
        *) fail "unknown argument '$1' (see the header of $0)" ;;
    esac
done

pick_tool() {
    if [[ -n "${CONTAINER_TOOL:-}" ]]; then
        echo "$CONTAINER_TOOL"
    elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
        echo docker
    elif command -v buildah >/dev/null 2>&1; then
        echo buildah
    elif command -v podman >/dev/null 2>&1 && podman info >/dev/null 2>&1; then
        echo podman
    else
        echo buildah
    fi
}

tool="$(pick_tool)"
if [[ "$tool" == buildah ]] && ! command -v buildah >/dev/null 2>&1; then
    log "installing buildah"
    apt-get update -qq && apt-get install -y -qq buildah >/dev/null
fi

buildah_vfs=(buildah --storage-driver "${BUILDAH_STORAGE_DRIVER:-vfs}")

# The tool's image build command; buildah writes the Docker format, which keeps HEALTHCHECK
# (the OCI image format has no field for it).
build() {
    case "$tool" in
        buildah)
            "${buildah_vfs[@]}" bud --quiet --format docker \
                --isolation "${BUILDAH_ISOLATION:-chroot}" "$@" >&2 ;;
        podman) podman build --quiet --format docker "$@" >&2 ;;
        *) "$tool" build --quiet "$@" >&2 ;;
    esac
}

image_exists() {
    case "$tool" in
        buildah) "${buildah_vfs[@]}" inspect --type image "$1" >/dev/null 2>&1 ;;
        *) "$tool" image inspect "$1" >/dev/null 2>&1 ;;
    esac
}

# A runtime base from this machine's own files: the dynamic loader, glibc's libraries and
# libgcc_s (what a Rust binary links; `ldd target/release/switchyard` lists no more), a
# `nonroot` user 65532, CA certificates and /tmp. Keyed by the glibc version, so a binary
# built on this machine runs on it.
local_runtime() {
    local glibc name context lib path
    glibc="$(ldd --version | head -1 | awk '{print $NF}')"
    name="localhost/switchyard-runtime:glibc-$glibc"
    if image_exists "$name"; then
        echo "$name"
        return
    fi
    log "making the runtime base $name from this machine's glibc $glibc"
    context="$(mktemp -d)"
    mkdir -p "$context/rootfs/etc/ssl/certs" "$context/rootfs/tmp" "$context/rootfs/home/nonroot" "$context/rootfs/lib64"
    chmod 1777 "$context/rootfs/tmp"
    for lib in ld-linux-x86-64.so.2 libc.so.6 libm.so.6 libgcc_s.so.1 libpthread.so.0 libdl.so.2 librt.so.1; do
        path="$(ldconfig -p | awk -v lib="$lib" '$1 == lib && /x86-64/ {print $NF; exit}')"
        [[ -n "$path" ]] || fail "no $lib on this machine (ldconfig -p)"
        mkdir -p "$context/rootfs$(dirname "$path")"
        cp -L "$path" "$context/rootfs$path"
    done
    ln -sf "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" "$context/rootfs/lib64/ld-linux-x86-64.so.2"
    if [[ -f /etc/ssl/certs/ca-certificates.crt ]]; then
        cp /etc/ssl/certs/ca-certificates.crt "$context/rootfs/etc/ssl/certs/"
    fi
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' \
        > "$context/rootfs/etc/passwd"
    printf 'root:x:0:\nnonroot:x:65532:\n' > "$context/rootfs/etc/group"
    chown 65532:65532 "$context/rootfs/home/nonroot"
    printf 'FROM scratch\nCOPY rootfs/ /\n' > "$context/Containerfile"
    build -t "$name" -f "$context/Containerfile" "$context"
    rm -rf "$context"
    echo "$name"
}

args=(--build-arg "SWITCHYARD_VERSION=$version" --build-arg "CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)")
commit="${SWITCHYARD_COMMIT:-$(git -C "$root" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)}"
args+=(--build-arg "SWITCHYARD_COMMIT=$commit")
case "$runtime" in
    "") ;;
    local) args+=(--build-arg "RUNTIME_IMAGE=$(local_runtime)") ;;
    *) args+=(--build-arg "RUNTIME_IMAGE=$runtime") ;;
esac

if [[ -n "$prebuilt" ]]; then
    [[ -x "$prebuilt" ]] || fail "no executable at '$prebuilt' (build it first: cargo build --release --bin switchyard)"
    # The context is this one binary and an empty data folder, not the repository.
    context="$(mktemp -d)"
    trap 'rm -rf "$context"' EXIT
    strip --strip-debug -o "$context/switchyard" "$prebuilt"
    mkdir "$context/data"
    log "building $tag with $tool from $prebuilt"
    build "${args[@]}" --target from-prebuilt -t "$tag" -f "$containerfile" "$context"
else
    log "building $tag with $tool from source (stage 'source' compiles the release binary)"
    build "${args[@]}" -t "$tag" -f "$containerfile" "$root"
fi
# buildah 1.28 leaves a working container on the stage that `COPY --from` read, and the build
# stages' images (and an earlier image of the same tag) untagged: with vfs storage each is a
# full copy of its layers.
if [[ "$tool" == buildah ]]; then
    "${buildah_vfs[@]}" containers --format '{{.ContainerID}} {{.ImageName}} {{.ContainerName}}' \
        | awk 'NF == 2 && $2 ~ /-working-container$/ {print $1}' \
        | while read -r leftover; do "${buildah_vfs[@]}" rm "$leftover" >/dev/null 2>&1 || true; done
    "${buildah_vfs[@]}" rmi --prune >/dev/null 2>&1 || true
fi
echo "$tag"
