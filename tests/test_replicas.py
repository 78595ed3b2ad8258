"""Many users: three replicas of the real executable behind a real HAProxy that health-checks /health.
Concurrent streams spread over all three; a replica killed (SIGKILL) mid-load costs only the streams it
held; restarted on its port, HAProxy's health check brings it back and new requests reach it."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from support.server_fixtures import ServerProcess, start_server

STREAMS = 24
# The EOS is ignored, so each stream takes exactly this many tokens: a few seconds for a replica's 8
# streams (each token is one SSE event), while every stream's first token comes in a fraction of that.
N_PREDICT = 400
# 8 sequences of 512 tokens, the tiny model's whole context. One thread each: llama.cpp's threads spin
# while they wait for each other, and 3 replicas x 2 threads on 2 cores stall one another.
REPLICA_ARGS = ("-np", "8", "-c", "4096", "-t", "1")
HAPROXY_CONFIG = """\
global
    maxconn 512
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    # A request sent to a replica that died before the health check noticed goes to another one.
    option redispatch
    retries 3
frontend llm
    bind 127.0.0.1:{port}
    default_backend replicas
backend replicas
    balance roundrobin
    option httpchk GET /health
    http-check expect status 200
    default-server inter 300ms fall 1 rise 1
    # Which replica answered, for the test; a real deployment needs nothing of the kind.
    http-response set-header X-Replica %s
{servers}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_of(server: ServerProcess) -> int:
    return int(server.url.rstrip("/").rsplit(":", 1)[1])


def sigkill(server: ServerProcess) -> None:
    """SIGKILL the server: the process started is the server itself (the launcher execs the runtime)."""
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(10)


def completions_served(server: ServerProcess) -> int:
    """The replica's own count of /completion requests, from its /metrics."""
    for line in httpx.get(server.url + "metrics", timeout=10).text.splitlines():
        if line.startswith('llmpack_requests_total{route="llama_completion"} '):
            return int(line.split()[1])
    return 0


async def stream(client: httpx.AsyncClient, i: int, n_predict: int, on_first: list) -> tuple[str, bool]:
    """One streaming /completion through the balancer: (the replica that served it, completed)."""
    body = {"prompt": f"user {i} says hello", "n_predict": n_predict, "ignore_eos": True, "stream": True,
            "temperature": 0}
    replica = "?"
    try:
        async with client.stream("POST", "/completion", json=body) as response:
            assert response.status_code == 200, await response.aread()
            replica = response.headers["x-replica"]
            first, buffer = True, b""
            # Split on b"\n" alone: the text may hold U+2028 and the like, which aiter_lines splits on.
            async for data in response.aiter_bytes():
                *lines, buffer = (buffer + data).split(b"\n")
                for line in lines:
                    if not line.startswith(b"data: "):
                        continue
                    if first:
                        on_first.append(i)
                        first = False
                    if json.loads(line[6:])["stop"]:
                        return replica, True
    except httpx.TransportError:  # the replica died mid-stream: HAProxy cuts the connection
        pass
    return replica, False


@pytest.fixture(scope="module")
def cluster(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory):
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    assert os.access(haproxy, os.X_OK), "haproxy is not installed: run build/system-deps.sh"
    logs = tmp_path_factory.mktemp("replicas")
    replicas = [start_server(tiny_bundle, *REPLICA_ARGS, log_path=logs / f"r{i}.log") for i in range(3)]
    lb_port = free_port()
    servers = "\n".join(f"    server r{i} 127.0.0.1:{port_of(r)} check" for i, r in enumerate(replicas))
    config = logs / "haproxy.cfg"
    config.write_text(HAPROXY_CONFIG.format(port=lb_port, servers=servers))
    with open(logs / "haproxy.log", "wb") as lb_log:  # the child keeps its own copy of the descriptor
        lb = subprocess.Popen([haproxy, "-db", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=lb_log)
    url = f"http://127.0.0.1:{lb_port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert lb.poll() is None and time.monotonic() < deadline, (logs / "haproxy.log").read_text()
        time.sleep(0.1)
    state = {"replicas": replicas, "url": url, "logs": logs, "bundle": tiny_bundle}
    yield state
    lb.terminate()
    lb.wait(10)
    for r in state["replicas"]:
        r.interrupt()


def run_streams(url: str, n_predict: int, kill: ServerProcess | None = None) -> list[tuple[str, bool]]:
    async def main() -> list[tuple[str, bool]]:
        limits = httpx.Limits(max_connections=STREAMS)
        async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
            first: list[int] = []
            tasks = [asyncio.create_task(stream(client, i, n_predict, first)) for i in range(STREAMS)]
            if kill is not None:
                # Every stream has its first token: each is held by its replica, mid-generation.
                while len(first) < STREAMS and not all(t.done() for t in tasks):
                    await asyncio.sleep(0.005)
                sigkill(kill)
            return list(await asyncio.gather(*tasks))
    return asyncio.run(main())


def test_streams_spread_survive_a_killed_replica_and_it_rejoins(cluster, capsys) -> None:
    replicas: list[ServerProcess] = cluster["replicas"]
    url = cluster["url"]

    # 1. Spread: every stream completes, each replica serves a share, by its own /metrics.
    results = run_streams(url, 32)
    assert all(done for _, done in results)
    served = [completions_served(r) for r in replicas]
    assert sum(served) == STREAMS and all(n > 0 for n in served), served
    assert served == [sum(1 for name, _ in results if name == f"r{i}") for i in range(3)]

    # 2. SIGKILL r1 while every stream is mid-generation: only r1's streams are lost.
    victim = replicas[1]
    results = run_streams(url, N_PREDICT, kill=victim)
    lost = [name for name, done in results if not done]
    held_by_victim = sum(1 for name, _ in results if name == "r1")
    assert lost and set(lost) == {"r1"} and len(lost) == held_by_victim, results
    survivors = [(name, done) for name, done in results if name != "r1"]
    assert survivors and all(done for _, done in survivors)

    # New requests while r1 is down all succeed (the health check, or redispatch, avoids it).
    during = [httpx.post(url + "/completion", json={"prompt": "hi", "n_predict": 4}, timeout=30) for _ in range(6)]
    assert all(r.status_code == 200 and r.headers["x-replica"] != "r1" for r in during)

    # 3. Restarted on its port, r1 passes HAProxy's health check and gets new requests again.
    restarted = start_server(cluster["bundle"], *REPLICA_ARGS, "--port", str(port_of(victim)),
                             log_path=cluster["logs"] / "r1-restarted.log")
    replicas[1] = restarted
    assert port_of(restarted) == port_of(victim)
    reached, deadline = [], time.monotonic() + 20
    while "r1" not in reached and time.monotonic() < deadline:
        response = httpx.post(url + "/completion", json={"prompt": "hi", "n_predict": 4}, timeout=30)
        assert response.status_code == 200
        reached.append(response.headers["x-replica"])
    assert "r1" in reached and completions_served(restarted) >= 1
    with capsys.disabled():
        print(f"\nreplicas: spread {served}; kill: {len(lost)} lost (all on r1, which held {held_by_victim}), "
              f"{len(survivors)} completed; after restart r1 reached after {len(reached)} requests")
