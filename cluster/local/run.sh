#!/usr/bin/env bash
# A local three-node Sluice cluster on loopback: redis-server on :6390, two simulated upstreams
# (:9101 OpenAI-style, :9102 Anthropic-style), nodes on :8081-8083 gossiping on UDP :7901-7903.
# Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --bin sluice
BIN=target/release/sluice
export SLUICE_ADMIN_TOKEN="${SLUICE_ADMIN_TOKEN:-local-admin}"
# The gossip key: the demo's (public) one unless SLUICE_GOSSIP_KEY is set already.
demo_key=$(sed -n 's/^SLUICE_GOSSIP_KEY=//p' cluster/demo.env)
export SLUICE_GOSSIP_KEY="${SLUICE_GOSSIP_KEY:-$demo_key}"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null' EXIT INT TERM
redis-server --port 6390 --bind 127.0.0.1 --save '' --appendonly no >/dev/null & pids+=($!)
$BIN mock-upstream --listen 127.0.0.1:9101 --protocol openai --name openai-sim --ttft-ms 30 --tokens-per-sec 300 & pids+=($!)
$BIN mock-upstream --listen 127.0.0.1:9102 --protocol anthropic --name anthropic-sim --ttft-ms 60 --tokens-per-sec 200 & pids+=($!)
for i in 1 2 3; do $BIN run --config cluster/local/node$i.yaml & pids+=($!); done
echo "cluster up: http://127.0.0.1:8081 .. :8083 (admin token: $SLUICE_ADMIN_TOKEN)"
echo "try: curl -s http://127.0.0.1:8082/admin/cluster -H \"Authorization: Bearer $SLUICE_ADMIN_TOKEN\""
wait
