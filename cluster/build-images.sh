#!/usr/bin/env bash
# Builds every image docker-compose.yaml names, on a machine that cannot pull images:
#   1. debian:bookworm-slim  from Debian's packages (debootstrap minbase + docker import); skipped when present
#   2. the sluice binary     on the host (cargo build --release --bin sluice); SLUICE_BIN=PATH uses that one instead
#   3. sluice:local          the runtime image with that binary (cluster/Dockerfile.prebuilt)
#      sluice-redis:local    redis-server from Debian's packages (cluster/redis/Dockerfile)
#      sluice-lb:local       HAProxy from Debian's packages (cluster/lb/Dockerfile)
# Then `docker-compose up -d` (or `docker compose up -d`) runs the stack without building or pulling.
# Idempotent: a re-run with nothing changed takes a few seconds (cargo and docker layer caches).
#
#   bash cluster/build-images.sh            # everything
#   bash cluster/build-images.sh base       # only the base image
#   bash cluster/build-images.sh images     # runtime images from an already built binary
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_IMAGE="${BASE_IMAGE:-debian:bookworm-slim}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
SUITE=bookworm
what="${1:-all}"
case "$what" in all | base | binary | images) ;; *)
  echo "usage: $0 [all|base|binary|images]" >&2
  exit 2
  ;;
esac

log() { printf '== %s\n' "$*"; }
CLEANUP=()
cleanup() { [ ${#CLEANUP[@]} -eq 0 ] || $SUDO rm -rf "${CLEANUP[@]}"; }
trap cleanup EXIT
have_image() { docker image inspect "$1" >/dev/null 2>&1; }
# docker build, quiet; its output (minus the legacy builder's deprecation notice) only when it fails.
dbuild() {
  local out
  if ! out=$(docker build -q "$@" 2>&1); then
    printf '%s\n' "$out" | grep -v -e '^DEPRECATED: The legacy builder' -e '^ *Install the buildx' -e '^ *https://docs.docker.com/go/buildx' >&2
    return 1
  fi
}

# The Debian mirror apt already uses (deb822 `.sources` or one-line `.list`), else deb.debian.org.
debian_mirror() {
  local f uri=""
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    uri=$(awk -v suite="$SUITE" '
      BEGIN { RS = ""; FS = "\n" }
      {
        u = ""; ok = 0
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^URIs:/) { sub(/^URIs:[ \t]*/, "", $i); split($i, a, /[ \t]+/); u = a[1] }
          if ($i ~ /^Suites:/) { n = split($i, s, /[ \t]+/); for (j = 2; j <= n; j++) if (s[j] == suite) ok = 1 }
        }
        if (ok && u != "") { print u; exit }
      }' "$f")
    [ -n "$uri" ] && break
  done
  if [ -z "$uri" ]; then
    uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
      awk -v suite="$SUITE" '$1 == "deb" { for (i = 3; i <= NF; i++) if ($i == suite) { print $(i - 1); exit } }')
  fi
  echo "${uri:-http://deb.debian.org/debian}"
}

build_base() {
  if have_image "$BASE_IMAGE"; then
    log "$BASE_IMAGE present"
    return
  fi
  if ! command -v debootstrap >/dev/null 2>&1; then
    log "installing debootstrap"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq debootstrap >/dev/null
  fi
  local mirror rootfs t0=$SECONDS
  mirror=$(debian_mirror)
  rootfs=$(mktemp -d /tmp/sluice-rootfs.XXXXXX)
  CLEANUP+=("$rootfs")
  log "debootstrap --variant=minbase $SUITE from $mirror (about a minute)"
  $SUDO debootstrap --variant=minbase "$SUITE" "$rootfs" "$mirror" >/tmp/sluice-debootstrap.log 2>&1 || {
    tail -20 /tmp/sluice-debootstrap.log >&2
    exit 1
  }
  # Trim as the official slim image does.
  $SUDO rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* \
    "$rootfs"/var/log/*.log
  log "docker import as $BASE_IMAGE"
  $SUDO tar -C "$rootfs" -c . | docker import --change 'CMD ["bash"]' - "$BASE_IMAGE" >/dev/null
  log "$BASE_IMAGE built in $((SECONDS - t0)) s"
}

build_binary() {
  if [ -n "${SLUICE_BIN:-}" ]; then
    log "using SLUICE_BIN=$SLUICE_BIN"
    return
  fi
  local t0=$SECONDS
  log "cargo build --release --bin sluice (4-5 min cold, seconds when up to date)"
  cargo build --release --bin sluice
  SLUICE_BIN="${CARGO_TARGET_DIR:-target}/release/sluice"
  log "binary ready in $((SECONDS - t0)) s"
}

build_images() {
  local bin="${SLUICE_BIN:-${CARGO_TARGET_DIR:-target}/release/sluice}"
  if [ ! -x "$bin" ]; then
    echo "no sluice binary at $bin: run '$0 binary' or set SLUICE_BIN" >&2
    exit 1
  fi
  have_image "$BASE_IMAGE" || build_base
  local t0=$SECONDS stage
  # A context holding only the binary: nothing else is sent to the daemon, wherever the target dir is.
  stage=$(mktemp -d /tmp/sluice-image.XXXXXX)
  CLEANUP+=("$stage")
  cp "$bin" "$stage/sluice"
  log "sluice:local (runtime image, host-built binary)"
  dbuild -t sluice:local --build-arg SLUICE_BIN=sluice -f cluster/Dockerfile.prebuilt "$stage"
  log "sluice-redis:local"
  dbuild -t sluice-redis:local cluster/redis
  log "sluice-lb:local"
  dbuild -t sluice-lb:local cluster/lb
  log "images ready in $((SECONDS - t0)) s"
}

case "$what" in
all)
  build_base
  build_binary
  build_images
  ;;
base) build_base ;;
binary) build_binary ;;
images) build_images ;;
esac
