#!/usr/bin/env bash
# Runs every Sluice test. First installs what is missing on a Debian machine that has only the Rust
# toolchain: redis-server (with redis-tools) and python3-venv from Debian's packages, and a virtualenv
# with the official `openai` and `anthropic` SDKs and pytest. Then the Rust unit and integration tests
# (real processes on loopback), the SDK tests, and the container tests of the docker-compose demo when
# a Docker engine answers.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
# redis-cli (`--cluster create` in tests/redis_topology.rs) is Debian's redis-tools, which redis-server
# depends on; sentinels run as `redis-server --sentinel` (no redis-sentinel package needed).
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

TARGET="${CARGO_TARGET_DIR:-target}"
VENV="${SLUICE_VENV:-$TARGET/pyenv}"
if ! "$VENV/bin/python" -c 'import openai, anthropic, pytest' >/dev/null 2>&1; then
  echo "== creating $VENV with openai, anthropic, pytest"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check openai anthropic pytest
fi

echo "== cargo test"
cargo build --bin sluice
cargo test

echo "== SDK tests (official openai and anthropic clients)"
SLUICE_BIN="$TARGET/debug/sluice" "$VENV/bin/pytest" -q tests/sdk

echo "== container tests (docker-compose demo: 3 nodes, Redis, load balancer; skipped without a Docker engine)"
SLUICE_BIN="$TARGET/debug/sluice" bash tests/containers.sh
