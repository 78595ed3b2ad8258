"""uvicorn's fast path (uvloop's event loop, httptools' parser: `uvicorn[standard]`) against what the
frozen runtime carries today (asyncio's loop, h11, pure Python): the same server from source (`llmpack
run`), twice, one of them with a folder holding uvloop and httptools on PYTHONPATH (uvicorn's "auto" loop
and protocol then pick them); --clients streaming clients on /v1/completions, SmolLM2-135M-Instruct,
-np 4, rounds alternated between the two. Aggregate tokens/s, medians.

    .venv/bin/python -m pip install --target /tmp/uvfast uvloop httptools
    .venv/bin/python bench/uvicorn_fast.py --fast /tmp/uvfast [--rounds 3] [--clients 8] [--threads N]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
from load import aggregate_tokens_per_second, free_port, serving  # noqa: E402
from results import machine, save  # noqa: E402
from smollm2 import smollm2_gguf  # noqa: E402


def loaded_libraries(port: int) -> str:
    """The memory maps of the process listening on `port` (which event loop it really runs)."""
    found = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True).stdout
    pid = found.split("pid=")[1].split(",")[0] if "pid=" in found else None
    return Path(f"/proc/{pid}/maps").read_text() if pid else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", required=True, help="a folder holding uvloop and httptools (pip install --target)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    model = smollm2_gguf()
    llmpack = str(Path(sys.executable).parent / "llmpack")
    command = [llmpack, "run", "-m", str(model), "--server", "--nobrowser", "--log-disable", "-np", "4",
               "-c", "4096", "-t", str(args.threads)]
    sides = {"h11 + asyncio": {**os.environ},
             "httptools + uvloop": {**os.environ, "PYTHONPATH": os.pathsep.join(
                 p for p in (args.fast, os.environ.get("PYTHONPATH")) if p)}}
    samples: dict[str, list[float]] = {}
    with contextlib.ExitStack() as running:
        bases = {}
        for name, env in sides.items():
            port = free_port()
            bases[name] = running.enter_context(serving([*command, "--port", str(port)], port, env=env, timeout=300))
            uses_uvloop = "uvloop" in loaded_libraries(port)
            if uses_uvloop != (name == "httptools + uvloop"):
                raise SystemExit(f"{name}: uvloop {'loaded' if uses_uvloop else 'not loaded'}; check --fast")
        for _ in range(args.rounds):
            for name, base in bases.items():
                samples.setdefault(name, []).append(aggregate_tokens_per_second(base, args.clients, args.tokens))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    ratio = medians["httptools + uvloop"] / medians["h11 + asyncio"]
    for name, value in medians.items():
        print(f"{name:20s} {value:7.1f} tok/s (median of {args.rounds}: {', '.join(f'{v:.1f}' for v in samples[name])})")
    print(f"httptools + uvloop vs h11 + asyncio: {ratio:.3f}x")
    path = save("uvicorn-fast", {"machine": machine(args.threads), "clients": args.clients, "tokens": args.tokens,
                                 "rounds": args.rounds, "tokens_per_second": samples, "medians": medians,
                                 "ratio": ratio})
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
