#!/usr/bin/env bash
# Container-level tests of the multi-node demo (docker-compose.yaml, cluster/).
#
#   bash tests/containers.sh                 # every group
#   bash tests/containers.sh static stack    # some groups: static stack routing limit node-stop partition redis upstream
#
# static     runs anywhere: node configs validate and differ only in id/advertise, compose file parses,
#            promtool checks and unit-tests the alert rules, the dashboard JSON parses, every metric the
#            rules and dashboard use is one Sluice exports.
# the rest   needs a Docker engine (else: "skipped: no docker", exit 0): builds the images with
#            cluster/build-images.sh, brings the stack up under a unique compose project name on free
#            loopback ports, and checks through the load balancer: health, routing, the global tenant limit
#            across 3 nodes, a node stopped, a node cut off the network, Redis stopped and started, an
#            upstream paused. Torn down by a trap whatever happens; bounded by SLUICE_CT_TIMEOUT (900 s).
# Ends with "N passed, M failed" (", K skipped" when some were skipped). Exit 1 when anything failed.
# SLUICE_BIN=PATH uses that binary for the images instead of `cargo build --release`;
# SLUICE_CT_KEEP=1 leaves the stack up and the work directory in place for a look afterwards.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

if [ -z "${SLUICE_CT_INNER:-}" ]; then
  export SLUICE_CT_INNER=1
  exec timeout -k 60 "${SLUICE_CT_TIMEOUT:-900}" bash "$0" "$@"
fi

GROUPS_ALL="static stack routing limit node-stop partition redis upstream"
WANT="${*:-$GROUPS_ALL}"
want() { [[ " $WANT " == *" $1 "* ]]; }

PASS=0 FAIL=0 SKIP=0
ok() {
  PASS=$((PASS + 1))
  echo "ok - $*"
}
bad() {
  FAIL=$((FAIL + 1))
  echo "FAIL - $*"
}
skip() {
  SKIP=$((SKIP + 1))
  echo "skip - $*"
}
summary() {
  if [ "$SKIP" -gt 0 ]; then echo "$PASS passed, $FAIL failed, $SKIP skipped"; else echo "$PASS passed, $FAIL failed"; fi
}
section() { printf '\n== %s\n' "$*"; }
py() { python3 "$ROOT/cluster/traffic.py" "$@"; }
# jget FILE EXPR: evaluate a Python expression over the JSON document d in FILE.
jget() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"; }
# poll SECONDS CMD...: run CMD every half second until it succeeds or the time is up.
poll() {
  local until=$((SECONDS + $1))
  shift
  while :; do
    "$@" && return 0
    [ "$SECONDS" -ge "$until" ] && return 1
    sleep 0.5
  done
}

WORK=$(mktemp -d /tmp/sluice-ct.XXXXXX)
PROJECT=""
COMPOSE=()
declare -A CID=()
PAUSED=()

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$PROJECT" ] && [ ${#COMPOSE[@]} -gt 0 ]; then
    for c in "${PAUSED[@]}"; do docker unpause "$c" >/dev/null 2>&1; done
    if [ "$FAIL" -gt 0 ]; then
      dc logs --no-color --tail 30 >"$WORK/compose.log" 2>&1
      echo "-- last log lines of the stack (all in $WORK/compose.log):"
      grep -v -e '^Attaching' -e 'Memory overcommit' "$WORK/compose.log" | grep -i -e warn -e error -e panic | tail -25
    fi
    if [ -n "${SLUICE_CT_KEEP:-}" ]; then
      echo "stack left up: ${COMPOSE[*]} -p $PROJECT -f $ROOT/docker-compose.yaml down -v"
    else
      dc down -v --remove-orphans -t 3 >/dev/null 2>&1
    fi
  fi
  [ -n "${SLUICE_CT_KEEP:-}" ] || [ "$FAIL" -gt 0 ] || rm -rf "$WORK"
  return $rc
}
exec 3>&1 # the script's stdout: a signal can arrive while a command's output goes to a file
on_signal() {
  exec 1>&3 2>&3
  bad "interrupted or timed out (SLUICE_CT_TIMEOUT=${SLUICE_CT_TIMEOUT:-900} s)"
  cleanup
  summary
  exit 1
}
trap cleanup EXIT
trap on_signal INT TERM

# ---------------------------------------------------------------------------------------------------------
# static: no Docker needed
# ---------------------------------------------------------------------------------------------------------
static_checks() {
  section "static checks"
  local bin="" t="${CARGO_TARGET_DIR:-target}" f n
  for f in "$t/debug/sluice" "$t/release/sluice"; do [ -x "$f" ] && bin=$f && break; done
  if [ -z "$bin" ]; then
    cargo build -q --bin sluice && bin="$t/debug/sluice"
  fi
  # The nodes read their gossip key from cluster/demo.env (compose's env_file): validate with it.
  local key
  key=$(sed -n 's/^SLUICE_GOSSIP_KEY=//p' cluster/demo.env)
  for n in 1 2 3; do
    f=cluster/nodes/sluice-$n.yaml
    if out=$(SLUICE_GOSSIP_KEY="$key" "$bin" validate --config "$f" 2>&1); then ok "sluice validate $f"; else bad "sluice validate $f: $out"; fi
  done
  # The node files are one config: only the header comment, node.id and cluster.advertise differ.
  local same=1
  for n in 1 2 3; do
    grep -q "^node: { id: sluice-$n," cluster/nodes/sluice-$n.yaml || same=0
    grep -q "^  advertise: sluice-$n:7946" cluster/nodes/sluice-$n.yaml || same=0
  done
  strip() { grep -v -e '^# Node ' -e '^node: ' -e '^  advertise: ' "$1"; }
  for n in 2 3; do diff -q <(strip cluster/nodes/sluice-1.yaml) <(strip cluster/nodes/sluice-$n.yaml) >/dev/null || same=0; done
  if [ $same = 1 ]; then ok "node configs differ only in node.id and cluster.advertise"; else bad "node configs drifted apart (diff cluster/nodes/sluice-1.yaml cluster/nodes/sluice-2.yaml)"; fi

  if ! command -v promtool >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "(installing promtool: Debian package prometheus)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; } >/dev/null 2>&1
  fi
  if command -v promtool >/dev/null 2>&1; then
    if out=$(promtool check rules cluster/prometheus/alerts.yml 2>&1); then ok "promtool check rules cluster/prometheus/alerts.yml"; else bad "promtool check rules: $out"; fi
    if out=$(cd cluster/prometheus && promtool test rules alerts.test.yml 2>&1); then ok "promtool test rules (alerts fire when they should)"; else bad "promtool test rules: $out"; fi
    if out=$(promtool check config cluster/prometheus/prometheus.yml 2>&1); then ok "promtool check config cluster/prometheus/prometheus.yml"; else bad "promtool check config: $out"; fi
  else
    skip "promtool not available (apt-get install prometheus)"
  fi

  if out=$(python3 - <<'EOF' 2>&1
import json, re, pathlib
d = json.load(open("cluster/grafana/dashboards/sluice.json"))
ids = [p["id"] for p in d["panels"]]
assert len(ids) == len(set(ids)), "duplicate panel ids"
assert d["uid"] and d["title"], "dashboard needs uid and title"
exprs = []
for p in d["panels"]:
    if p["type"] == "row":
        continue
    assert p["datasource"]["uid"] == "prometheus", f"panel {p['title']}: datasource uid"
    assert p["targets"], f"panel {p['title']}: no query"
    exprs += [t["expr"] for t in p["targets"]]
ds = pathlib.Path("cluster/grafana/provisioning/datasources/prometheus.yml").read_text()
assert "uid: prometheus" in ds, "datasource uid differs from the dashboard's"
print(f"{len(d['panels'])} panels, {len(exprs)} queries")
EOF
  ); then ok "grafana dashboard JSON parses and uses the provisioned datasource ($out)"; else bad "grafana dashboard: $out"; fi

  # Every sluice_* metric the alert rules and the dashboard query must be one the gateway exports.
  if out=$(python3 - <<'EOF' 2>&1
import re, pathlib
used = set()
for f in ["cluster/prometheus/alerts.yml", "cluster/grafana/dashboards/sluice.json", "cluster/prometheus/alerts.test.yml"]:
    used |= set(re.findall(r"\bsluice_[a-z0-9_]+", pathlib.Path(f).read_text()))
used = {re.sub(r"_(bucket|count|sum)$", "", m) for m in used}
src = "\n".join(p.read_text() for p in pathlib.Path("src").rglob("*.rs"))
missing = sorted(m for m in used if f'"{m}"' not in src)
if missing:
    raise SystemExit("not exported by src/: " + ", ".join(missing))
print(len(used), "metric names")
EOF
  ); then ok "alert rules and dashboard use only metrics Sluice exports ($out)"; else bad "metric names: $out"; fi

  for f in cluster/build-images.sh cluster/demo.sh tests/containers.sh; do
    if out=$(bash -n "$f" 2>&1); then ok "bash -n $f"; else bad "bash -n $f: $out"; fi
  done
  if out=$(python3 -c 'import ast, sys; ast.parse(open(sys.argv[1]).read(), sys.argv[1])' cluster/traffic.py 2>&1); then ok "cluster/traffic.py compiles"; else bad "cluster/traffic.py: $out"; fi
}

# ---------------------------------------------------------------------------------------------------------
# helpers for the stack
# ---------------------------------------------------------------------------------------------------------
dc() { "${COMPOSE[@]}" -p "$PROJECT" -f "$ROOT/docker-compose.yaml" "$@"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
health() { docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "${CID[$1]}" 2>/dev/null; }
healthy() { [ "$(health "$1")" = healthy ]; }
all_healthy() {
  local s
  for s in "$@"; do healthy "$s" || return 1; done
}
# node_get N PATH [curl args]: GET inside node N's container (works while it is cut off from the network).
node_get() {
  local n=$1 path=$2
  shift 2
  docker exec "${CID[sluice-$n]}" curl -sS -m 3 "$@" "http://127.0.0.1:8080$path"
}
admin() { node_get "$1" /admin/cluster -f -H "Authorization: Bearer $SLUICE_ADMIN_TOKEN"; }
# metric N NAME [k=v ...]: the summed value of a metric on node N (fails when absent).
metric() {
  local n=$1 name=$2
  shift 2
  local args=()
  for l in "$@"; do args+=(--label "$l"); done
  node_get "$n" /metrics -f 2>/dev/null | py metric "$name" "${args[@]}" --sum
}
metric_is() { # metric_is N VALUE NAME [k=v ...]
  local n=$1 want=$2
  shift 2
  [ "$(metric "$n" "$@" 2>/dev/null)" = "$want" ]
}
members() { metric "$1" sluice_cluster_members; }
members_are() { [ "$(members "$1" 2>/dev/null)" = "$2" ]; }
members_below() { local m; m=$(members "$1" 2>/dev/null) && [ "$m" -lt "$2" ]; }
nodes_see() { # nodes_see COUNT N...: each node reports COUNT live members
  local want=$1 n
  shift
  for n in "$@"; do members_are "$n" "$want" || return 1; done
}
modes_are() { # modes_are MODE N...
  local mode=$1 n
  shift
  for n in "$@"; do metric_is "$n" 1 sluice_limiter_mode "mode=$mode" || return 1; done
}
lb_url() { echo "http://127.0.0.1:$SLUICE_PORT"; }
send() { py send --url "$(lb_url)" --json "$@"; }
# limit_bound FILE KEY SLACK: burst + rate x elapsed + slack, for the demo tenants (20 + 2/s).
limit_bound() { jget "$1" "int(20 + 2 * d['keys']['$2']['last'] + $3)"; }
lb_routes_to() { # lb_routes_to NODE: a few requests through the LB reach that node
  send --key sk-ops --count 9 --concurrency 3 >"$WORK/probe.json" 2>/dev/null &&
    [ "$(jget "$WORK/probe.json" "d['keys']['sk-ops']['node'].get('$1', 0)")" -gt 0 ]
}
status_of() { jget "$1" "d['keys']['$2']['status']"; }
since() { python3 -c 'import sys, time; print(round(time.time() - float(sys.argv[1]), 2))' "$1"; }
# failed_after FILE KEY T: requests started after T seconds (into the run) that got neither 200 nor 429.
failed_after() { jget "$1" "sum(1 for e in d['keys']['$2']['log'] if e[0] > $3 and e[1] not in (200, 429))"; }

# ---------------------------------------------------------------------------------------------------------
# the groups that need Docker
# ---------------------------------------------------------------------------------------------------------
stack_up() {
  section "images and stack"
  local t0=$SECONDS
  if bash cluster/build-images.sh >"$WORK/build.log" 2>&1; then
    ok "cluster/build-images.sh built the images ($((SECONDS - t0)) s)"
  else
    bad "cluster/build-images.sh failed:"
    tail -20 "$WORK/build.log"
    return 1
  fi
  if out=$(docker run --rm -v "$ROOT/cluster/lb/haproxy.cfg:/c.cfg:ro" sluice-lb:local haproxy -c -f /c.cfg 2>&1); then
    ok "haproxy -c accepts cluster/lb/haproxy.cfg"
  else
    bad "haproxy -c: $out"
  fi
  PROJECT="sluice-ct-$$-$RANDOM"
  export SLUICE_PORT SLUICE_LB_ADMIN_PORT SLUICE_NODE1_PORT SLUICE_NODE2_PORT SLUICE_NODE3_PORT SLUICE_SUBNET SLUICE_ADMIN_TOKEN
  SLUICE_PORT=$(free_port) SLUICE_LB_ADMIN_PORT=$(free_port)
  SLUICE_NODE1_PORT=$(free_port) SLUICE_NODE2_PORT=$(free_port) SLUICE_NODE3_PORT=$(free_port)
  SLUICE_SUBNET="172.30.$((100 + RANDOM % 150)).0/24"
  SLUICE_ADMIN_TOKEN="ct-$RANDOM$RANDOM"
  t0=$SECONDS
  local try
  for try in 1 2 3; do
    dc up -d --no-build >"$WORK/up.log" 2>&1 && break
    # Another network already uses this subnet: pick another one.
    grep -qi 'overlap' "$WORK/up.log" || break
    dc down -v --remove-orphans >/dev/null 2>&1
    SLUICE_SUBNET="172.30.$((100 + RANDOM % 150)).0/24"
  done
  if ! dc ps -q sluice-1 | grep -q .; then
    bad "compose up (project $PROJECT)"
    tail -20 "$WORK/up.log"
    return 1
  fi
  local s
  for s in redis mock-openai mock-anthropic sluice-1 sluice-2 sluice-3 lb; do CID[$s]=$(dc ps -a -q "$s"); done
  if poll 120 all_healthy redis mock-openai mock-anthropic sluice-1 sluice-2 sluice-3 lb; then
    ok "stack up, every service healthy ($((SECONDS - t0)) s, project $PROJECT, LB on $(lb_url))"
  else
    bad "stack not healthy after 120 s: $(for s in "${!CID[@]}"; do printf '%s=%s ' "$s" "$(health "$s")"; done)"
    return 1
  fi
  if poll 20 curl -fsS -o /dev/null "$(lb_url)/readyz"; then ok "GET /readyz through the load balancer answers 200"; else bad "LB /readyz"; fi
  if poll 20 nodes_see 3 1 2 3; then
    ok "gossip: every node sees 3 members (sluice_cluster_members)"
  else
    bad "gossip: members seen by nodes 1-3: $(members 1 || echo -) $(members 2 || echo -) $(members 3 || echo -)"
  fi
  if out=$(admin 1 2>&1) && [ "$(echo "$out" | py members)" = 3 ]; then
    ok "GET /admin/cluster with the admin token lists 3 live members"
  else
    bad "GET /admin/cluster: ${out:0:200}"
  fi
  if [ "$(echo "$out" | python3 -c 'import json,sys; g=json.load(sys.stdin).get("gossip",{}); print(g.get("sealed"), g.get("insecure"))')" = "True False" ]; then
    ok "gossip sealed with the demo key from cluster/demo.env (/admin/cluster gossip.sealed)"
  else
    bad "gossip not sealed: ${out:0:200}"
  fi
  code=$(node_get 1 /admin/cluster -o /dev/null -w '%{http_code}')
  if [ "$code" = 401 ] || [ "$code" = 403 ]; then ok "GET /admin/cluster without the token is refused ($code)"; else bad "GET /admin/cluster without token answered $code"; fi
  if poll 20 modes_are global 1 2 3; then ok "limiter in global mode (Redis) on every node"; else bad "limiter mode not global on every node (sluice_limiter_mode)"; fi
}

test_routing() {
  section "routing through the load balancer"
  send --key sk-ops --count 30 --concurrency 3 >"$WORK/routing.json"
  local okc nodes backends
  okc=$(jget "$WORK/routing.json" "d['keys']['sk-ops']['admitted']")
  nodes=$(jget "$WORK/routing.json" "len(d['keys']['sk-ops']['node'])")
  backends=$(jget "$WORK/routing.json" "sorted(d['keys']['sk-ops']['backend'])")
  [ "$okc" = 30 ] && ok "30/30 requests answered 200 through the LB" || bad "routing: only $okc/30 answered 200: $(status_of "$WORK/routing.json" sk-ops)"
  [ "$nodes" = 3 ] && ok "the LB spread them over all 3 nodes: $(jget "$WORK/routing.json" "d['keys']['sk-ops']['node']")" || bad "LB used $nodes nodes"
  [ "$backends" = "['anthropic-sim', 'openai-sim']" ] && ok "both upstreams served (weighted 3:1): $(jget "$WORK/routing.json" "d['keys']['sk-ops']['backend']")" ||
    bad "backends seen: $backends"
}

test_limit() {
  section "global tenant limit across 3 nodes (120/min, burst 20)"
  send --key sk-team-a --count 60 --concurrency 10 >"$WORK/limit.json"
  local adm lim bound failed
  adm=$(jget "$WORK/limit.json" "d['keys']['sk-team-a']['admitted']")
  lim=$(jget "$WORK/limit.json" "d['keys']['sk-team-a']['limited']")
  failed=$(jget "$WORK/limit.json" "d['keys']['sk-team-a']['failed']")
  bound=$(limit_bound "$WORK/limit.json" sk-team-a 3)
  echo "   60 sent by team-a: $adm admitted, $lim limited, $failed failed over $(jget "$WORK/limit.json" "d['keys']['sk-team-a']['last']") s; nodes $(jget "$WORK/limit.json" "d['keys']['sk-team-a']['node']")"
  if [ "$adm" -le "$bound" ] && [ "$adm" -ge 15 ]; then
    ok "admitted $adm <= $bound (burst 20 + 2/s x elapsed + 3), not 3 x 20 as per-node limits would give"
  else
    bad "global limit: admitted $adm, expected between 15 and $bound"
  fi
  [ "$failed" = 0 ] && ok "the rest were answered 429, none failed" || bad "limit: $failed requests neither 200 nor 429: $(status_of "$WORK/limit.json" sk-team-a)"
}

test_node_stop() {
  section "a node stopped"
  local t_start stopped_at
  t_start=$(date +%s.%N)
  send --key sk-ops --duration 12 --rps 15 --concurrency 4 >"$WORK/stop.json" &
  local bg=$!
  sleep 4
  docker stop -t 15 "${CID[sluice-2]}" >/dev/null
  stopped_at=$(since "$t_start")
  wait $bg
  local sent failed after late
  sent=$(jget "$WORK/stop.json" "d['keys']['sk-ops']['sent']")
  failed=$(jget "$WORK/stop.json" "d['keys']['sk-ops']['failed'] + d['keys']['sk-ops']['limited']")
  late=$(failed_after "$WORK/stop.json" sk-ops "$stopped_at")
  after=$(jget "$WORK/stop.json" "sum(1 for e in d['keys']['sk-ops']['log'] if e[0] > $stopped_at + 0.5 and e[3] == 'sluice-2')")
  echo "   $sent sent over 12 s, sluice-2 stopped at ${stopped_at} s: $(status_of "$WORK/stop.json" sk-ops), nodes $(jget "$WORK/stop.json" "d['keys']['sk-ops']['node']")"
  # docker stop = SIGTERM: the node drains what it has; at most the requests in flight (4 workers) may fail.
  if [ "$failed" -le 4 ] && [ "$late" = 0 ]; then
    ok "$failed of $sent requests failed while sluice-2 stopped, none sent after the stop"
  else
    bad "node stop: $failed of $sent failed ($late sent after the stop): $(jget "$WORK/stop.json" "d['keys']['sk-ops']['errors']")"
  fi
  [ "$after" = 0 ] && ok "after the stop the LB sent nothing to sluice-2" || bad "node stop: $after answers from sluice-2 after it stopped"
  if poll 15 nodes_see 2 1 3; then ok "sluice-1 and sluice-3 see 2 members"; else bad "after stop, members seen: $(members 1 || echo -) $(members 3 || echo -)"; fi
  docker start "${CID[sluice-2]}" >/dev/null
  if poll 60 healthy sluice-2; then ok "sluice-2 restarted and healthy"; else bad "sluice-2 not healthy after restart"; fi
  if poll 20 nodes_see 3 1 2 3; then ok "sluice-2 rejoined: every node sees 3 members"; else bad "after restart, members seen: $(members 1 || echo -) $(members 2 || echo -) $(members 3 || echo -)"; fi
  if poll 20 lb_routes_to sluice-2; then ok "the LB sends traffic to sluice-2 again"; else bad "LB does not route to sluice-2 after restart"; fi
}

test_partition() {
  section "a node cut off the network (docker network disconnect)"
  local net ip
  net=$(docker inspect -f '{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}' "${CID[sluice-3]}")
  ip=$(docker inspect -f "{{(index .NetworkSettings.Networks \"$net\").IPAddress}}" "${CID[sluice-3]}")
  local t_start cut_at bg
  t_start=$(date +%s.%N)
  send --key sk-ops --duration 12 --rps 10 --concurrency 4 --timeout 10 >"$WORK/partition.json" &
  bg=$!
  sleep 2
  docker network disconnect "$net" "${CID[sluice-3]}"
  cut_at=$(since "$t_start")
  if poll 15 nodes_see 2 1 2; then ok "sluice-1 and sluice-2 see sluice-3 gone: 2 members ($(since "$t_start") s into the run, cut at $cut_at s)"; else bad "partition: members seen by 1, 2: $(members 1 || echo -) $(members 2 || echo -)"; fi
  if poll 15 members_below 3 3; then
    ok "the cut-off sluice-3 sees the others gone ($(members 3) member(s))"
  else
    bad "partition: sluice-3 still sees $(members 3 || echo -) members"
  fi
  wait $bg
  local sent failed late
  sent=$(jget "$WORK/partition.json" "d['keys']['sk-ops']['sent']")
  failed=$(jget "$WORK/partition.json" "d['keys']['sk-ops']['failed'] + d['keys']['sk-ops']['limited']")
  late=$(failed_after "$WORK/partition.json" sk-ops "$cut_at")
  echo "   $sent sent, sluice-3 cut off at $cut_at s: $(status_of "$WORK/partition.json" sk-ops), nodes $(jget "$WORK/partition.json" "d['keys']['sk-ops']['node']"), p95 $(jget "$WORK/partition.json" "d['keys']['sk-ops']['p95']") s"
  # Requests sluice-3 was serving when the cable was cut never get an answer (the client gives up after
  # 10 s); every request sent after the cut must succeed (the LB retries elsewhere, then marks it down).
  if [ "$failed" -le 4 ] && [ "$late" = 0 ]; then
    ok "$failed of $sent requests failed (in flight on sluice-3 at the cut), none sent after it"
  else
    bad "partition: $failed of $sent failed, $late of them sent after the cut: $(jget "$WORK/partition.json" "d['keys']['sk-ops']['errors']")"
  fi
  docker network connect --ip "$ip" --alias sluice-3 "$net" "${CID[sluice-3]}"
  if poll 30 nodes_see 3 1 2 3; then ok "reconnected: every node sees 3 members again"; else bad "after reconnect, members seen: $(members 1 || echo -) $(members 2 || echo -) $(members 3 || echo -)"; fi
  if poll 20 lb_routes_to sluice-3; then ok "the LB sends traffic to sluice-3 again"; else bad "LB does not route to sluice-3 after reconnect"; fi
}

test_redis() {
  section "Redis stopped, then started"
  docker stop -t 1 "${CID[redis]}" >/dev/null
  send --key sk-team-b --count 15 --concurrency 3 >"$WORK/redis-down.json"
  local failed
  failed=$(jget "$WORK/redis-down.json" "d['keys']['sk-team-b']['failed']")
  [ "$failed" = 0 ] && ok "Redis down: requests still answered (200/429), p95 $(jget "$WORK/redis-down.json" "d['keys']['sk-team-b']['p95']") s" ||
    bad "Redis down: $failed requests failed: $(status_of "$WORK/redis-down.json" sk-team-b)"
  nudge_fallback() {
    send --key sk-team-b --count 6 --concurrency 3 >/dev/null 2>&1
    modes_are fallback 1 2 3
  }
  if poll 20 nudge_fallback; then ok "every node reports sluice_limiter_mode{mode=\"fallback\"} 1"; else bad "fallback mode not reported by every node"; fi
  local d="" n
  for n in 1 2 3; do d="$d $(metric "$n" sluice_limiter_fallback_divisor 2>/dev/null || echo -)"; done
  [ "$d" = " 3 3 3" ] && ok "fallback divides each quota by the 3 live nodes (sluice_limiter_fallback_divisor)" || bad "fallback divisors:$d"
  send --key sk-team-a --count 60 --concurrency 10 >"$WORK/fallback.json"
  local adm bound
  adm=$(jget "$WORK/fallback.json" "d['keys']['sk-team-a']['admitted']")
  bound=$(limit_bound "$WORK/fallback.json" sk-team-a 6)
  [ "$adm" -le "$bound" ] && ok "in fallback the cluster still admits about the limit: $adm <= $bound" || bad "fallback: team-a admitted $adm > $bound"
  docker start "${CID[redis]}" >/dev/null
  if poll 30 modes_are global 1 2 3; then ok "Redis back: every node returns to global mode"; else bad "nodes not back in global mode after Redis restarted"; fi
  send --key sk-team-b --count 60 --concurrency 10 >"$WORK/redis-up.json"
  adm=$(jget "$WORK/redis-up.json" "d['keys']['sk-team-b']['admitted']")
  bound=$(limit_bound "$WORK/redis-up.json" sk-team-b 3)
  [ "$adm" -le "$bound" ] && ok "global limit holds again: team-b admitted $adm <= $bound" || bad "after Redis restart team-b admitted $adm > $bound"
}

test_upstream() {
  section "an upstream paused (docker pause mock-openai)"
  docker pause "${CID[mock-openai]}" >/dev/null && PAUSED+=("${CID[mock-openai]}")
  send --key sk-ops --duration 10 --rps 4 --concurrency 4 >"$WORK/pause.json"
  local adm sent late_slow
  adm=$(jget "$WORK/pause.json" "d['keys']['sk-ops']['admitted']")
  sent=$(jget "$WORK/pause.json" "d['keys']['sk-ops']['sent']")
  late_slow=$(jget "$WORK/pause.json" "sum(1 for e in d['keys']['sk-ops']['log'] if e[0] > 6 and e[4] > 1.0)")
  echo "   $sent sent: $(status_of "$WORK/pause.json" sk-ops), backends $(jget "$WORK/pause.json" "d['keys']['sk-ops']['backend']"), max latency $(jget "$WORK/pause.json" "d['keys']['sk-ops']['max']") s"
  [ "$adm" = "$sent" ] && ok "all $sent requests answered 200 (failover to anthropic-sim)" || bad "upstream paused: $adm of $sent answered 200: $(status_of "$WORK/pause.json" sk-ops)"
  [ "$late_slow" = 0 ] && ok "once health checks noticed (after 6 s), no request waited on the paused upstream (all under 1 s)" ||
    bad "upstream paused: $late_slow requests started after 6 s took over 1 s"
  all_down() { for n in 1 2 3; do metric_is "$n" 0 sluice_backend_healthy backend=openai-sim || return 1; done; }
  if poll 10 all_down; then ok "every node marks openai-sim down (sluice_backend_healthy 0)"; else bad "openai-sim not marked down on every node"; fi
  merged_down() {
    admin 1 2>/dev/null | python3 -c '
import json, sys
c = json.load(sys.stdin).get("cluster", {})
b = [b for b in c.get("backends", []) if b.get("name") == "openai-sim"]
sys.exit(0 if b and b[0].get("merged", {}).get("available") is False else 1)'
  }
  if poll 10 merged_down; then ok "/admin/cluster: the merged (cluster-wide) view has openai-sim unavailable"; else bad "/admin/cluster merged view does not show openai-sim down"; fi
  docker unpause "${CID[mock-openai]}" >/dev/null && PAUSED=()
  all_up() { for n in 1 2 3; do metric_is "$n" 1 sluice_backend_healthy backend=openai-sim || return 1; done; }
  if poll 20 all_up; then ok "unpaused: openai-sim healthy again on every node"; else bad "openai-sim not healthy again"; fi
}

# ---------------------------------------------------------------------------------------------------------
want static && static_checks

needs_docker=0
for g in stack routing limit node-stop partition redis upstream; do want "$g" && needs_docker=1; done
if [ $needs_docker = 1 ]; then
  if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
    echo "skipped: no docker (no Docker engine answers; container tests not run)"
  else
    if docker compose version >/dev/null 2>&1; then
      COMPOSE=(docker compose)
    elif command -v docker-compose >/dev/null 2>&1; then
      COMPOSE=(docker-compose)
    fi
    if [ ${#COMPOSE[@]} -eq 0 ]; then
      echo "skipped: no docker compose (neither 'docker compose' nor 'docker-compose'; container tests not run)"
    elif stack_up; then
      want routing && test_routing
      want limit && test_limit
      want node-stop && test_node_stop
      want partition && test_partition
      want redis && test_redis
      want upstream && test_upstream
    fi
  fi
fi

echo
[ "$FAIL" -gt 0 ] && echo "work directory kept: $WORK"
cleanup
trap - EXIT
summary
[ "$FAIL" -eq 0 ]
