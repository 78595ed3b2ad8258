"""An agent trace with more conversations than sequences: --conversations clients at once on -np 2 (one KV
pool, -kvu), each --turns turns through /v1/chat/completions (streamed, greedy, 32 tokens a reply), each
turn resending the whole history: a system prompt they share (~500 tokens) and a source file of its
own (~800 tokens), so a conversation that comes back to a sequence another one used finds its prefix
only in the prompt cache. Ours and native llama-server (same llama.cpp, bench/native.py), with
--cache-ram 0 and the default --cache-ram 8192, the same flags, in one run: total time, time per turn,
time to first token, and the prompt tokens each server actually decoded (its timings' prompt_n, summed).
SmolLM2-135M-Instruct.

    .venv/bin/python bench/agent_trace.py [--conversations 6] [--turns 3] [--threads N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
from load import free_port, serving  # noqa: E402
from native import ensure_native_tools  # noqa: E402
from results import machine, save  # noqa: E402
from smollm2 import build_smollm2, smollm2_gguf  # noqa: E402

REPLY_TOKENS = 32
COMMIT = "904c065"  # fixed texts: the numbers stay comparable
FILES = ("runtime/engine/slots.py", "runtime/bundle/model_loader.py", "runtime/server/routes_anthropic.py",
         "runtime/chat/mode.py", "runtime/server/llamacpp_responses.py", "runtime/engine/types.py",
         "runtime/plan.py", "runtime/bundle/payload_format.py", "runtime/engine/rpc.py",
         "runtime/server/routes_misc.py", "runtime/flags/values.py", "runtime/engine/offload.py")


def shown(path: str) -> str:
    return subprocess.run(["git", "show", f"{COMMIT}:{path}"], cwd=REPO, check=True,
                          capture_output=True, text=True).stdout


def system_prompt() -> str:
    return "You are a coding agent. The project's manual follows.\n\n" + shown("README.md")[:2000]


def task(conversation: int, turn: int) -> str:
    path = FILES[conversation % len(FILES)]
    if turn == 0:
        return f"Here is {path}:\n```python\n{shown(path)[:2500]}```\nStep 1: name its classes."
    return f"Step {turn + 1}: name one function of {path} a test should call, and why."


async def conversation(client: httpx.AsyncClient, base: str, system: str, index: int, turns: int,
                       turns_seen: list[dict[str, float]]) -> None:
    messages = [{"role": "system", "content": system}]
    for turn in range(turns):
        messages.append({"role": "user", "content": task(index, turn)})
        body = {"model": "m", "messages": messages, "max_tokens": REPLY_TOKENS, "temperature": 0, "stream": True,
                "ignore_eos": True, "stream_options": {"include_usage": True}}  # the same length on both sides
        started, first, reply, decoded = time.perf_counter(), None, [], 0
        async with client.stream("POST", base + "/v1/chat/completions", json=body, timeout=900) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if chunk.get("timings"):  # llama-server's, on the last chunk: prompt_n is what it decoded
                    decoded = chunk["timings"]["prompt_n"]
                for choice in chunk.get("choices") or []:
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        first = first or time.perf_counter()
                        reply.append(content)
        ended = time.perf_counter()
        turns_seen.append({"turn_ms": (ended - started) * 1000, "ttft_ms": ((first or ended) - started) * 1000,
                           "prompt_decoded": decoded})
        messages.append({"role": "assistant", "content": "".join(reply)})


def run_trace(base: str, conversations: int, turns: int) -> dict[str, float]:
    system = system_prompt()

    async def load() -> dict[str, float]:
        seen: list[dict[str, float]] = []
        # A connection per request: llama-server drops a kept-alive one that a turn reuses after a wait
        # ("Server disconnected without sending a response"), so neither side keeps them.
        async with httpx.AsyncClient(limits=httpx.Limits(max_keepalive_connections=0)) as client:
            started = time.perf_counter()
            await asyncio.gather(*(conversation(client, base, system, i, turns, seen) for i in range(conversations)))
            total = time.perf_counter() - started
        return {"total_s": total, "turn_ms_mean": statistics.fmean(t["turn_ms"] for t in seen),
                "ttft_ms_mean": statistics.fmean(t["ttft_ms"] for t in seen),
                "ttft_ms_median": statistics.median(t["ttft_ms"] for t in seen),
                "prompt_decoded": sum(t["prompt_decoded"] for t in seen)}

    return asyncio.run(load())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=6)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="-t for both servers (1 on a machine others load: OpenMP's barriers stall there)")
    args = parser.parse_args()
    model = smollm2_gguf()
    native_bin = ensure_native_tools(log=lambda m: print(m, file=sys.stderr))
    threads = str(args.threads)
    common = ["-c", "16384", "-np", "2", "-kvu", "-t", threads]
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="llmpack-agent-trace-") as work:
        exe = build_smollm2(Path(work))
        env = {**os.environ, "LD_LIBRARY_PATH": str(native_bin)}
        for cache in ("0", "8192"):
            for side, command, side_env in (
                    ("ours", [str(exe), "--server", "--nobrowser", "--log-disable"], None),
                    ("native", [str(native_bin / "llama-server"), "-m", str(model), "--jinja", "--no-webui"], env)):
                port = free_port()
                with serving([*command, *common, "--cache-ram", cache, "--port", str(port)], port, env=side_env) as base:
                    key = f"{side} --cache-ram {cache}"
                    results[key] = run_trace(base, args.conversations, args.turns)
                    r = results[key]
                    print(f"{key:26s} total {r['total_s']:6.1f} s, per turn {r['turn_ms_mean']:6.0f} ms, first token "
                          f"{r['ttft_ms_mean']:6.0f} ms (means), prompt tokens decoded {r['prompt_decoded']}", flush=True)
    ratios = {f"--cache-ram {cache} {what}": results[f"native --cache-ram {cache}"][field] / results[f"ours --cache-ram {cache}"][field]
              for cache in ("0", "8192") for what, field in (("total", "total_s"), ("per turn", "turn_ms_mean"),
                                                       ("first token", "ttft_ms_mean"))}
    for side in ("ours", "native"):  # what the prompt cache gains each side: none / cache, total time
        ratios[f"{side}: --cache-ram 8192 vs 0, total"] = (results[f"{side} --cache-ram 0"]["total_s"]
                                                         / results[f"{side} --cache-ram 8192"]["total_s"])
    for name, ratio in ratios.items():
        print(f"{name:38s} {ratio:.2f}x")
    print("(native / ours: above 1 is ours faster; --cache-ram 8192 vs 0: above 1 is the cache faster)")
    path = save("agent-trace", {"machine": machine(int(threads)), "conversations": args.conversations,
                                "turns": args.turns, "results": results, "ratios": ratios})
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
