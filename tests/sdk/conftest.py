"""Real processes for the SDK tests: two simulated upstreams and a gateway, on loopback, port 0."""
import base64
import os
import queue
import subprocess
import tempfile
import threading
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("SLUICE_BIN", os.path.join(ROOT, "target", "debug", "sluice"))


def _start(args, marker):
    proc = subprocess.Popen([BIN, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(l) for l in proc.stdout], daemon=True).start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            break
        if marker in line:
            addr = line.split("://", 1)[1].split()[0]
            return proc, "http://" + addr
    proc.kill()
    raise RuntimeError(f"sluice {' '.join(args)} did not start")


def _gateway(mock_args):
    procs = []
    try:
        oa, oa_url = _start(["mock-upstream", "--listen", "127.0.0.1:0", "--protocol", "openai", "--name", "oa-sim", *mock_args], "listening on")
        procs.append(oa)
        an, an_url = _start(["mock-upstream", "--listen", "127.0.0.1:0", "--protocol", "anthropic", "--name", "an-sim", *mock_args], "listening on")
        procs.append(an)
        cfg = f"""
backends:
  - name: oa
    url: "{oa_url}"
    protocol: openai
    eject_after: 100000
    models: {{ gpt-4o-mini: gpt-4o-mini-2024-07-18 }}
  - name: oar
    url: "{oa_url}"
    protocol: openai
    apis: [chat, responses]
    eject_after: 100000
    models: {{ gpt-4o-resp: gpt-4o }}
  - name: any
    url: "{oa_url}"
    protocol: openai
    eject_after: 100000
    list_models: [open-any-1, open-any-2]
  - name: an
    url: "{an_url}"
    protocol: anthropic
    eject_after: 100000
    models: {{ claude-haiku: claude-3-5-haiku-latest }}
tenants:
  - {{ id: sdk, tier: premium, keys: [sk-sdk-test] }}
routing:
  strategy: round-robin
  rules:
    - {{ name: any-model, match: {{ model: [open-any-1, open-any-2] }}, route: {{ backend: any }} }}
  default: {{ backend: [oa, oar, an] }}
"""
        path = os.path.join(tempfile.mkdtemp(), "sluice.yaml")
        with open(path, "w") as f:
            f.write(cfg)
        gw, gw_url = _start(["run", "--config", path, "--listen", "127.0.0.1:0"], "sluice listening on")
        procs.append(gw)
        yield gw_url
    finally:
        for p in procs:
            p.kill()
            p.wait(timeout=10)


@pytest.fixture(scope="session")
def gateway():
    yield from _gateway([])


@pytest.fixture(scope="session")
def truncating_gateway():
    """Both upstreams end every stream cleanly but early (after two frames, no completion marker)."""
    yield from _gateway(["--stream-fault", "truncate"])


def _free_udp_port():
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def responses_cluster():
    """Three gateway nodes gossiping on loopback over two simulated upstreams that serve the Responses
    API (each keeps its own stored responses); yields the nodes' base URLs."""
    procs = []
    try:
        urls = []
        for name in ("resp-a", "resp-b"):
            p, u = _start(["mock-upstream", "--listen", "127.0.0.1:0", "--protocol", "openai", "--name", name], "listening on")
            procs.append(p)
            urls.append(u)
        gossip = [_free_udp_port() for _ in range(3)]
        seeds = ", ".join(f"127.0.0.1:{g}" for g in gossip)
        # The nodes seal their gossip with this test key (never use it outside tests).
        os.environ["SLUICE_SDK_GOSSIP_KEY"] = base64.b64encode(b"sdk test gossip key, 32 bytes!!!").decode()
        nodes = []
        for i, g in enumerate(gossip):
            cfg = f"""
node: {{ id: sdk-node-{i} }}
backends:
  - {{ name: ra, url: "{urls[0]}", protocol: openai, apis: [responses], eject_after: 100000 }}
  - {{ name: rb, url: "{urls[1]}", protocol: openai, apis: [responses], eject_after: 100000 }}
tenants:
  - {{ id: sdk, tier: premium, keys: [sk-sdk-test] }}
routing:
  strategy: round-robin
cluster:
  cluster_id: sdk
  secret_env: SLUICE_SDK_GOSSIP_KEY
  gossip_listen: 127.0.0.1:{g}
  seeds: [{seeds}]
  gossip_interval_ms: 100
"""
            path = os.path.join(tempfile.mkdtemp(), "sluice.yaml")
            with open(path, "w") as f:
                f.write(cfg)
            gw, gw_url = _start(["run", "--config", path, "--listen", "127.0.0.1:0"], "sluice listening on")
            procs.append(gw)
            nodes.append(gw_url)
        yield nodes
    finally:
        for p in procs:
            p.kill()
            p.wait(timeout=10)
