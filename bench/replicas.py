"""Replicas behind a load balancer (not a test): requests/s of 3 replicas of one executable behind
HAProxy, against 1 replica alone and 1 behind the same HAProxy, under the same closed-loop load
(C clients, each sending its next request when the last one is answered).

On a machine with as many cores as one replica uses (this project's 2-core machine), 3 replicas share
the same cores: the ratio shows what the balancer and the extra processes cost, not a gain. Replicas
pay off when each has its own cores (or its own machine/GPU). Every replica decodes with one thread
(-t 1) by default, so that the setups differ only in the balancer and the number of replicas:
llama.cpp's threads spin while they wait for each other, and more spinning threads than cores stall
one another (with -t 2 each, 3 replicas on 2 cores took minutes per request, and HAProxy's own CPU
time was enough to slow a lone -t 2 replica tenfold).

    .venv/bin/python bench/replicas.py [--executable dist/smollm2-135m-instruct.llmpack] [--seconds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
from load import PROMPTS, free_port, serving

HAPROXY = """\
defaults
    mode http
    timeout connect 2s
    timeout client 120s
    timeout server 120s
frontend llm
    bind 127.0.0.1:{port}
    default_backend replicas
backend replicas
    balance leastconn
    option httpchk GET /health
    default-server inter 1s
{servers}
"""


@contextmanager
def haproxy(backends: list[str]) -> Iterator[str]:
    port = free_port()
    servers = "\n".join(f"    server r{i} {b.removeprefix('http://')} check" for i, b in enumerate(backends))
    with tempfile.NamedTemporaryFile("w", suffix=".cfg") as config:
        config.write(HAPROXY.format(port=port, servers=servers))
        config.flush()
        process = subprocess.Popen([shutil.which("haproxy") or "/usr/sbin/haproxy", "-db", "-f", config.name],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    if httpx.get(base + "/health", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("haproxy did not come up")
                time.sleep(0.1)
            yield base
        finally:
            process.terminate()
            process.wait(10)


async def _client(http: httpx.AsyncClient, base: str, i: int, max_tokens: int, until: float) -> int:
    done = 0
    while time.monotonic() < until:
        body = {"model": "m", "prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": max_tokens, "temperature": 0}
        response = await http.post(f"{base}/v1/completions", json=body, timeout=120)
        if response.status_code != 200:
            FAILED.append(response.status_code)
            continue
        done += 1
    return done


FAILED: list[int] = []  # statuses of failed requests (none expected)


def requests_per_second(base: str, clients: int, max_tokens: int, seconds: float) -> float:
    async def run() -> float:
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=clients)) as http:
            await _client(http, base, 0, 4, time.monotonic())  # warm-up: one request
            started = time.monotonic()
            counts = await asyncio.gather(*(_client(http, base, i, max_tokens, started + seconds)
                                            for i in range(clients)))
            return sum(counts) / (time.monotonic() - started)
    return asyncio.run(run())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executable", default=str(REPO / "dist" / "smollm2-135m-instruct.llmpack"))
    parser.add_argument("--clients", type=int, default=12)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--threads", type=int, default=1, help="-t of the lone replica")
    parser.add_argument("--replica-threads", type=int, default=1, help="-t of each of the 3 replicas")
    args = parser.parse_args()

    def replica(stack: ExitStack, threads: int) -> str:
        port = free_port()
        command = [args.executable, "--server", "--nobrowser", "--host", "127.0.0.1", "--port", str(port),
                   "-t", str(threads), "-np", str(args.clients), "--log-disable"]
        return stack.enter_context(serving(command, port))

    load = (args.clients, args.max_tokens, args.seconds)
    with ExitStack() as stack:
        one = replica(stack, args.threads)
        alone = requests_per_second(one, *load)
        with haproxy([one]) as base:
            one_behind = requests_per_second(base, *load)
    with ExitStack() as stack:
        with haproxy([replica(stack, args.replica_threads) for _ in range(3)]) as base:
            three_behind = requests_per_second(base, *load)
    print(f"{args.clients} clients, {args.max_tokens} tokens per request, {args.seconds:.0f} s each: "
          f"{Path(args.executable).name}; -t {args.threads} alone, -t {args.replica_threads} each of 3")
    print(f"  1 replica alone:          {alone:7.2f} requests/s")
    print(f"  1 replica behind HAProxy: {one_behind:7.2f} requests/s  ({one_behind / alone:.2f}x alone)")
    print(f"  3 replicas behind HAProxy:{three_behind:7.2f} requests/s  ({three_behind / alone:.2f}x alone)")
    if FAILED:
        print(f"  failed requests: {len(FAILED)} (statuses {sorted(set(FAILED))})")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
