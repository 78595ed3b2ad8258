"""What reading a chat costs the server: 8 clients streaming /v1/chat/completions (rendered and parsed by
llama.cpp's chat library, runtime/formats/llama_chat.py) against the same clients on /v1/completions (no
template, no parser), ours and native llama-server (same llama.cpp, bench/native.py), SmolLM2-135M-Instruct,
-np 4, alternated rounds. If parsing cost anything measurable, our chat ratio would fall below our
completions ratio.

    .venv/bin/python bench/chat_parse.py [--rounds 3] [--clients 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
from load import PROMPTS, free_port, serving  # noqa: E402
from native import ensure_native_tools  # noqa: E402
from results import machine, save  # noqa: E402
from smollm2 import build_smollm2, smollm2_gguf  # noqa: E402

MAX_TOKENS = 128


async def _stream(client: httpx.AsyncClient, base: str, i: int, chat: bool) -> int:
    prompt = PROMPTS[i % len(PROMPTS)]
    if chat:
        path, body = "/v1/chat/completions", {"messages": [{"role": "user", "content": prompt}]}
    else:
        path, body = "/v1/completions", {"prompt": prompt}
    body |= {"model": "m", "max_tokens": MAX_TOKENS, "temperature": 0, "stream": True,
             "ignore_eos": True}  # every stream the same length on both sides
    tokens = 0
    async with client.stream("POST", base + path, json=body, timeout=600) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                for choice in json.loads(line[6:]).get("choices") or []:
                    delta = choice.get("delta") or {}
                    if choice.get("text") or delta.get("content") or delta.get("reasoning_content"):
                        tokens += 1
    return tokens


def tokens_per_second(base: str, clients: int, chat: bool) -> float:
    async def load() -> tuple[int, float]:
        async with httpx.AsyncClient() as client:
            started = time.perf_counter()
            counts = await asyncio.gather(*(_stream(client, base, i, chat) for i in range(clients)))
            return sum(counts), time.perf_counter() - started

    asyncio.run(load())  # warm-up: the same prompts, so both sides then reuse their cached prefixes alike
    tokens, seconds = asyncio.run(load())
    return tokens / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    model = smollm2_gguf()
    native_bin = ensure_native_tools(log=lambda m: print(m, file=sys.stderr))
    threads = str(len(os.sched_getaffinity(0)))
    common = ["-c", "8192", "-np", "4", "-t", threads]
    with tempfile.TemporaryDirectory(prefix="llmpack-chat-parse-") as work:
        exe = build_smollm2(Path(work))
        ours_port, native_port = free_port(), free_port()
        ours = [str(exe), "--server", "--nobrowser", "--port", str(ours_port), "--log-disable", *common]
        native = [str(native_bin / "llama-server"), "-m", str(model), "--port", str(native_port), "--jinja",
                  "--no-webui", *common]
        env = {**os.environ, "LD_LIBRARY_PATH": str(native_bin)}
        samples: dict[str, list[float]] = {}
        with serving(ours, ours_port) as ours_base, serving(native, native_port, env=env) as native_base:
            for _ in range(args.rounds):
                for side, base in (("ours", ours_base), ("native", native_base)):
                    for kind in ("completions", "chat"):
                        samples.setdefault(f"{side}_{kind}", []).append(
                            tokens_per_second(base, args.clients, kind == "chat"))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    ratios = {kind: medians[f"ours_{kind}"] / medians[f"native_{kind}"] for kind in ("completions", "chat")}
    for kind in ("completions", "chat"):
        print(f"{kind:12s} {args.clients} clients: ours {medians['ours_' + kind]:7.1f} tok/s, "
              f"native {medians['native_' + kind]:7.1f} tok/s, ratio {ratios[kind]:.2f}x")
    path = save("chat-parse", {"machine": machine(int(threads)), "clients": args.clients, "rounds": args.rounds, "tokens_per_second": samples,
                                 "medians": medians, "ratios": ratios})
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
