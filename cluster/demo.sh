#!/usr/bin/env bash
# Drives traffic from two tenants through the load balancer of the running docker-compose stack and prints
# what the cluster does: per-tenant admitted vs limited across all nodes, the routing split (backends from
# `x-sluice-backend`, nodes from the LB's `x-sluice-lb-server`, per-node metrics), then what changes when a
# node is stopped, when Redis is stopped, and when an upstream is paused. Puts everything back at the end.
# About two minutes. Needs python3 on the host (standard library only).
#
#   docker compose up -d            # or: bash cluster/build-images.sh && docker-compose up -d
#   bash cluster/demo.sh            # same variables as docker-compose.yaml: SLUICE_PORT, SLUICE_NODE1_PORT...,
#                                   # SLUICE_ADMIN_TOKEN, COMPOSE_PROJECT_NAME
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

LB="http://127.0.0.1:${SLUICE_PORT:-8080}"
TOKEN="${SLUICE_ADMIN_TOKEN:-demo-admin-token}"
NODE_URLS=("http://127.0.0.1:${SLUICE_NODE1_PORT:-8081}" "http://127.0.0.1:${SLUICE_NODE2_PORT:-8082}" "http://127.0.0.1:${SLUICE_NODE3_PORT:-8083}")
STEP_SECONDS="${DEMO_STEP_SECONDS:-10}"

if docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  COMPOSE=(docker-compose)
else
  echo "needs docker compose (v2) or docker-compose (v1)" >&2
  exit 1
fi
dc() { "${COMPOSE[@]}" -f "$ROOT/docker-compose.yaml" "$@"; }
py() { python3 "$ROOT/cluster/traffic.py" "$@"; }
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
note() { printf '   %s\n' "$*"; }
cid() { dc ps -q "$1" 2>/dev/null | head -1; }
nodes() { py nodes --url "${NODE_URLS[0]}" --name sluice-1 --url "${NODE_URLS[1]}" --name sluice-2 --url "${NODE_URLS[2]}" --name sluice-3; }
wait_for() { # wait_for SECONDS CMD...
  local until=$((SECONDS + $1))
  shift
  until "$@"; do
    [ "$SECONDS" -ge "$until" ] && return 1
    sleep 0.5
  done
}
healthy() { [ "$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$1" 2>/dev/null)" = healthy ]; }
mode_of() { curl -fsS -m 2 "$1/metrics" 2>/dev/null | py metric sluice_limiter_mode --label "mode=$2" --sum 2>/dev/null; }
all_modes() { # all_modes MODE: every running node reports it
  local u
  for u in "${NODE_URLS[@]}"; do [ "$(mode_of "$u" "$1")" = 1 ] || return 1; done
}
cluster_view() {
  local out
  if out=$(curl -fsS -m 2 -H "Authorization: Bearer $TOKEN" "${NODE_URLS[0]}/admin/cluster" 2>/dev/null); then
    echo "$out" | python3 -c '
import json, sys
top = json.load(sys.stdin)
c = top.get("cluster") or top
print("   /admin/cluster on %s: limiter %s, %s live member(s) of cluster %s" % (
    top.get("node", "?"), top.get("limiter_mode", "?"), c.get("live_count", "?"), c.get("cluster_id", "?")))
for m in c.get("members", []):
    print("     %-10s %-8s %-20s%s" % (m.get("id"), m.get("status"), m.get("addr", ""), " (this node)" if m.get("is_self") else ""))
for b in c.get("backends", []):
    mg = b.get("merged", {})
    votes = " ".join("%s:%s" % (r.get("node"), "up" if r.get("healthy") else "DOWN") for r in b.get("reports", []))
    print("     backend %-14s merged %-5s (%s voters: %s)" % (
        b.get("name"), "up" if mg.get("available") else "DOWN", mg.get("voters", "?"), votes))
' 2>/dev/null || note "/admin/cluster: $(echo "$out" | head -c 300)"
  else
    note "/admin/cluster not available (this build has no admin endpoint yet, or SLUICE_ADMIN_TOKEN differs)"
  fi
}

STOPPED=()
PAUSED=()
restore() {
  local c
  for c in "${PAUSED[@]}"; do docker unpause "$c" >/dev/null 2>&1; done
  for c in "${STOPPED[@]}"; do docker start "$c" >/dev/null 2>&1; done
}
trap restore EXIT
trap 'exit 130' INT TERM

if ! curl -fsS -m 3 -o /dev/null "$LB/readyz"; then
  echo "the load balancer at $LB does not answer /readyz: start the stack first (see cluster/README.md)" >&2
  exit 1
fi
S2=$(cid sluice-2) REDIS=$(cid redis) OPENAI=$(cid mock-openai)
if [ -z "$S2" ] || [ -z "$REDIS" ] || [ -z "$OPENAI" ]; then
  echo "cannot find the compose containers (set COMPOSE_PROJECT_NAME if you used -p)" >&2
  exit 1
fi

say "0. The cluster as it starts"
nodes
cluster_view

say "1. Two tenants, 8 requests/s each for ${STEP_SECONDS} s, through the load balancer"
note "team-a (premium, weighted 3:1 over both upstreams) and team-b (free tier: least-cost, so the cheap"
note "openai-sim) each have 120 requests/minute, burst 20, for the whole cluster. Expect about"
note "20 + 2/s x ${STEP_SECONDS} s = $((20 + 2 * STEP_SECONDS)) of $((8 * STEP_SECONDS)) admitted per tenant, whichever node the LB picks"
note "(per-node limits would admit up to 3 x that). Requests over the limit wait up to 1 s in the queue"
note "(shaping.max_wait_ms) for a token before they get 429."
py send --url "$LB" --key sk-team-a --key sk-team-b --duration "$STEP_SECONDS" --rps 8 --concurrency 16
note "per node (metrics since start):"
nodes

say "2. A node stops (docker stop sluice-2) while traffic flows"
note "sk-ops (no limit) shows whether any request fails; team-a shows the limit: still ~2/s for the cluster with 2 nodes."
py send --url "$LB" --key sk-ops --key sk-team-a --duration "$STEP_SECONDS" --rps 5 --concurrency 8 &
bg=$!
sleep 3
docker stop -t 15 "$S2" >/dev/null && STOPPED+=("$S2") && note "sluice-2 stopped at ~3 s"
wait $bg
sleep 2
nodes
cluster_view
note "starting sluice-2 again..."
docker start "$S2" >/dev/null && STOPPED=()
wait_for 60 healthy "$S2" && note "sluice-2 healthy again; the LB sends it traffic after 2 good health checks"

say "3. Redis stops (docker stop redis)"
note "Each node falls back to local limits within a few failed calls, each quota divided by the live nodes"
note "(3), so the cluster still admits about the limit; no request waits on the dead Redis."
docker stop -t 1 "$REDIS" >/dev/null && STOPPED+=("$REDIS")
py send --url "$LB" --key sk-team-a --key sk-team-b --duration "$STEP_SECONDS" --rps 8 --concurrency 16
nodes
note "starting Redis again..."
docker start "$REDIS" >/dev/null && STOPPED=()
if ! curl -fsS -m 2 "${NODE_URLS[0]}/metrics" 2>/dev/null | py metric sluice_limiter_mode >/dev/null; then
  note "(this build reports no sluice_limiter_mode: limits are per node)"
elif wait_for 30 all_modes global; then
  note "every node is back in global mode"
else
  note "not every node reports global mode yet"
fi
nodes

say "4. An upstream stalls (docker pause mock-openai)"
note "Requests in flight to it wait for the first-byte timeout (3 s) and fail over to anthropic-sim; after two"
note "failed health probes (about 2 s) every node routes around it, so team-b's cheap route moves too."
docker pause "$OPENAI" >/dev/null && PAUSED+=("$OPENAI")
py send --url "$LB" --key sk-ops --key sk-team-b --duration "$STEP_SECONDS" --rps 3 --concurrency 4
nodes
docker unpause "$OPENAI" >/dev/null && PAUSED=()
note "mock-openai resumed; health probes bring it back within about 2 s."
sleep 3
py send --url "$LB" --key sk-ops --count 12 --concurrency 3

say "The Responses API through the same routes"
note "POST /v1/responses: translated to chat completions for the simulated upstreams, limited and counted alike."
py send --url "$LB" --key sk-ops --count 12 --concurrency 3 --api responses

say "Done"
note "Prometheus and Grafana: docker compose --profile observability up -d, then http://127.0.0.1:3000 (dashboard"
note "'Sluice cluster'); HAProxy's view: http://127.0.0.1:${SLUICE_LB_ADMIN_PORT:-8404}/stats"
