#!/usr/bin/env python3
"""Traffic and inspection helper for the docker-compose demo (standard library only).

  traffic.py send --url http://127.0.0.1:8080 --key sk-team-a --key sk-team-b --count 60 --concurrency 8
      Chat completions through the load balancer, one worker pool per key, all keys at once
      (--api responses: the Responses API, `POST /v1/responses`, instead).
      --rps R paces each key; --duration S sends until S seconds have passed (instead of --count).
      Prints a table per key (admitted vs limited, backend and node split, latency) or, with --json, one
      JSON object: {"elapsed": s, "keys": {key: summary}}.
  curl -s NODE/metrics | traffic.py metric sluice_cluster_members [--label mode=fallback] [--sum]
      Values of one metric from Prometheus text on stdin ("name{labels} value" lines, or the sum with --sum);
      exit 1 when no sample matches.
  curl -s -H "Authorization: Bearer $T" NODE/admin/cluster | traffic.py members
      Live member count from the /admin/cluster JSON on stdin; exit 1 when it cannot be read.
  traffic.py nodes --url http://127.0.0.1:8081 --name sluice-1 --url ...
      One line per node from its /metrics: members seen, limiter mode, backend health, tenant decisions.
"""

import argparse
import http.client
import json
import re
import sys
import threading
import time
import urllib.parse

BODY = json.dumps(
    {
        "model": "gpt-4o-mini",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "Say hello from the Sluice demo."}],
    }
).encode()

# The same question through the Responses API (`--api responses`).
RESPONSES_BODY = json.dumps(
    {"model": "gpt-4o-mini", "max_output_tokens": 16, "input": "Say hello from the Sluice demo."}
).encode()

# path and body of each API `send` can call
APIS = {"chat": ("/v1/chat/completions", BODY), "responses": ("/v1/responses", RESPONSES_BODY)}


class Summary:
    def __init__(self):
        self.lock = threading.Lock()
        self.status = {}
        self.backend = {}
        self.node = {}
        self.latencies = []
        self.errors = {}
        self.first_error = None
        self.started = None
        self.finished = None
        # [start (s since the run began), status, backend, node, latency (s)] per request
        self.log = []

    def add(self, t0, status, backend, node, latency, error=None):
        with self.lock:
            key = str(status) if status else "error"
            self.status[key] = self.status.get(key, 0) + 1
            if status and 200 <= status < 300:
                self.backend[backend or "-"] = self.backend.get(backend or "-", 0) + 1
            if node:
                self.node[node] = self.node.get(node, 0) + 1
            if error:
                self.errors[error] = self.errors.get(error, 0) + 1
                self.first_error = self.first_error or error
            self.latencies.append(latency)
            self.log.append((round(t0, 3), status or 0, backend or "", node or "", round(latency, 4)))

    def as_dict(self):
        lat = sorted(self.latencies)

        def q(p):
            return round(lat[min(len(lat) - 1, int(p * len(lat)))], 4) if lat else None

        ok = sum(v for k, v in self.status.items() if k.startswith("2"))
        limited = self.status.get("429", 0)
        return {
            "sent": len(lat),
            "admitted": ok,
            "limited": limited,
            "failed": len(lat) - ok - limited,
            "status": self.status,
            "backend": self.backend,
            "node": self.node,
            "errors": self.errors,
            "p50": q(0.5),
            "p95": q(0.95),
            "max": round(lat[-1], 4) if lat else None,
            "first": self.started,
            "last": self.finished,
            "log": self.log,
        }


def worker(url, key, headers, summary, next_slot, stop_at, timeout, api="chat"):
    path, body = APIS[api]
    u = urllib.parse.urlsplit(url)
    conn = None
    while True:
        slot = next_slot()
        if slot is None:
            break
        if stop_at and time.monotonic() >= stop_at:
            break
        t0 = time.monotonic()
        status = backend = node = err = None
        for attempt in (1, 2):
            reused = conn is not None
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=timeout)
                h = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
                h.update(headers)
                conn.request("POST", path, body=body, headers=h)
                resp = conn.getresponse()
                resp.read()
                status = resp.status
                backend = resp.getheader("x-sluice-backend")
                node = resp.getheader("x-sluice-lb-server")
                if resp.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
                # A kept-alive connection the load balancer had closed: reconnect once, like clients do.
                conn = None
                err = type(e).__name__
                if attempt == 2 or not reused:
                    break
            except Exception as e:  # timeouts, refused connections: count them as failed requests
                conn = None
                err = type(e).__name__
                break
        now = time.monotonic()
        summary.add(t0 - START, status, backend, node, now - t0, None if status else err)
        with summary.lock:
            summary.finished = round(now - START, 3)


START = time.monotonic()


def cmd_send(a):
    global START
    headers = dict(h.split(":", 1) for h in a.header)
    headers = {k.strip(): v.strip() for k, v in headers.items()}
    START = time.monotonic()
    stop_at = START + a.duration if a.duration else None
    results = {}
    threads = []
    for key in a.key:
        s = Summary()
        s.started = 0.0
        results[key] = s
        lock = threading.Lock()
        state = {"n": 0}
        interval = 1.0 / a.rps if a.rps else 0.0

        def next_slot(lock=lock, state=state, interval=interval):
            with lock:
                n = state["n"]
                if not a.duration and n >= a.count:
                    return None
                state["n"] = n + 1
            if interval:
                due = START + n * interval
                delay = due - time.monotonic()
                if stop_at and due >= stop_at:
                    return None
                if delay > 0:
                    time.sleep(delay)
            return n

        for _ in range(a.concurrency):
            t = threading.Thread(target=worker, args=(a.url, key, headers, s, next_slot, stop_at, a.timeout, a.api), daemon=True)
            t.start()
            threads.append(t)
    for t in threads:
        t.join()
    out = {"elapsed": round(time.monotonic() - START, 3), "keys": {k: v.as_dict() for k, v in results.items()}}
    if a.json:
        json.dump(out, sys.stdout)
        print()
        return 0
    print(f"  {'key':<12} {'sent':>5} {'admitted':>9} {'limited':>8} {'failed':>7}  {'p50':>7} {'p95':>7}  backends / nodes")
    for k, s in out["keys"].items():
        be = " ".join(f"{b}={n}" for b, n in sorted(s["backend"].items()))
        nodes = " ".join(f"{b}={n}" for b, n in sorted(s["node"].items()))
        p50 = f"{s['p50'] * 1000:.0f}ms" if s["p50"] is not None else "-"
        p95 = f"{s['p95'] * 1000:.0f}ms" if s["p95"] is not None else "-"
        print(f"  {k:<12} {s['sent']:>5} {s['admitted']:>9} {s['limited']:>8} {s['failed']:>7}  {p50:>7} {p95:>7}  {be} | {nodes}")
        if s["errors"]:
            print(f"  {'':<12} errors: {s['errors']}")
    print(f"  ({out['elapsed']:.1f} s)")
    return 0


SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def cmd_metric(a):
    want = dict(x.split("=", 1) for x in a.label)
    found = []
    for line in sys.stdin:
        if line.startswith("#"):
            continue
        m = SAMPLE.match(line.strip())
        if not m or m.group(1) != a.name:
            continue
        labels = dict(LABEL.findall(m.group(3) or ""))
        if all(labels.get(k) == v for k, v in want.items()):
            found.append((m.group(2) or "", float(m.group(4))))
    if not found:
        return 1
    if a.sum:
        v = sum(x for _, x in found)
        print(int(v) if v == int(v) else v)
    else:
        for lbl, v in found:
            print(f"{a.name}{lbl} {int(v) if v == int(v) else v}")
    return 0


def cmd_members(_a):
    try:
        doc = json.load(sys.stdin)
    except ValueError:
        return 1
    if isinstance(doc, dict) and isinstance(doc.get("cluster"), dict):
        doc = doc["cluster"]  # {"node", "limiter_mode", "cluster": {"live_count", "members", "backends"}}
    if isinstance(doc, dict) and isinstance(doc.get("live_count"), int):
        print(doc["live_count"])
        return 0
    members = doc.get("members") if isinstance(doc, dict) else None
    if isinstance(members, list):
        print(sum(1 for m in members if str(m.get("status", "alive")) not in ("dead", "left", "leaving")))
        return 0
    return 1


def scrape(url, timeout=2.0):
    """{(name, frozenset(labels)): value} from a /metrics URL, or None when it does not answer."""
    import urllib.request

    try:
        with urllib.request.urlopen(url.rstrip("/") + "/metrics", timeout=timeout) as r:
            text = r.read().decode()
    except Exception:
        return None
    out = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = SAMPLE.match(line.strip())
        if m:
            out[(m.group(1), frozenset(LABEL.findall(m.group(3) or "")))] = float(m.group(4))
    return out


def pick(samples, name, **labels):
    want = set(labels.items())
    return [(dict(k[1]), v) for k, v in samples.items() if k[0] == name and want <= k[1]]


def cmd_nodes(a):
    """One line per node: what its /metrics say about membership, the limiter, backends and tenants."""
    print(f"  {'node':<10} {'members':>7}  {'limiter':<9} {'backends healthy':<32} tenants allowed/limited (since start)")
    for url in a.url:
        s = scrape(url)
        i = a.url.index(url)
        label = a.name[i] if i < len(a.name) else urllib.parse.urlsplit(url).netloc
        if s is None:
            print(f"  {label:<10} {'-':>7}  {'down':<9}")
            continue
        members = pick(s, "sluice_cluster_members")
        members = str(int(members[0][1])) if members else "n/a"
        modes = [lbl["mode"] for lbl, v in pick(s, "sluice_limiter_mode") if v == 1]
        mode = modes[0] if modes else "n/a"
        div = pick(s, "sluice_limiter_fallback_divisor")
        if mode == "fallback" and div:
            mode += f"/{int(div[0][1])}"
        health = " ".join(f"{lbl['backend']}={'up' if v == 1 else 'DOWN'}" for lbl, v in sorted(pick(s, "sluice_backend_healthy"), key=lambda x: x[0]["backend"]))
        tenants = {}
        for lbl, v in pick(s, "sluice_limiter_decisions_total"):
            outcome = lbl.get("outcome")
            if outcome not in ("allowed", "limited"):
                continue  # "queued": waited for a token, then counted again as allowed or limited
            t = tenants.setdefault(lbl.get("tenant", "?"), [0, 0])
            t[0 if outcome == "allowed" else 1] += int(v)
        ten = " ".join(f"{t}={x[0]}/{x[1]}" for t, x in sorted(tenants.items()))
        print(f"  {label:<10} {members:>7}  {mode:<9} {health:<32} {ten}")
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("send")
    s.add_argument("--url", default="http://127.0.0.1:8080")
    s.add_argument("--key", action="append", required=True)
    s.add_argument("--count", type=int, default=20, help="requests per key")
    s.add_argument("--duration", type=float, default=0, help="send for this many seconds instead of --count")
    s.add_argument("--rps", type=float, default=0, help="pace each key at this rate (0: as fast as the workers go)")
    s.add_argument("--concurrency", type=int, default=4, help="workers per key")
    s.add_argument("--timeout", type=float, default=20)
    s.add_argument("--header", action="append", default=[], help="extra header NAME:VALUE")
    s.add_argument("--json", action="store_true")
    s.add_argument("--api", choices=sorted(APIS), default="chat", help="chat completions or the responses api")
    m = sub.add_parser("metric")
    m.add_argument("name")
    m.add_argument("--label", action="append", default=[], help="NAME=VALUE")
    m.add_argument("--sum", action="store_true")
    sub.add_parser("members")
    n = sub.add_parser("nodes")
    n.add_argument("--url", action="append", required=True, help="a node's base URL, e.g. http://127.0.0.1:8081")
    n.add_argument("--name", action="append", default=[], help="display name for each --url, in order")
    a = p.parse_args()
    return {"send": cmd_send, "metric": cmd_metric, "members": cmd_members, "nodes": cmd_nodes}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
