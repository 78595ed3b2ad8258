"""Server load for the benchmark: N concurrent streaming clients on an OpenAI-compatible
/v1/completions, each asking for the same number of tokens; aggregate tokens per second."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time
from contextlib import contextmanager
from typing import Iterator

import httpx

PROMPTS = [
    "Write a long story about a lighthouse keeper who finds a message in a bottle.",
    "Explain in detail how a steam engine works, step by step.",
    "Describe a journey across a desert, day by day.",
    "Write a long letter from a sailor to his family back home.",
    "Tell the history of a small mountain village over a hundred years.",
    "Describe the rules and strategy of chess to a beginner.",
    "Write a long fairy tale about a clever fox and a proud crow.",
    "Explain how bread is made, from wheat in the field to the loaf.",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(command: list[str], port: int, env: dict[str, str] | None = None, timeout: float = 120,
            ready_path: str = "/health") -> Iterator[str]:
    """Starts a server process and yields its base URL once `ready_path` answers 200."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}: {' '.join(command)}")
            try:
                if httpx.get(f"{base}{ready_path}", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not become healthy: {' '.join(command)}")
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


CUT_STREAMS: list[int] = []  # streams a server closed before their end (llama-cpp-python's does)


async def _stream_one(client: httpx.AsyncClient, base: str, prompt: str, max_tokens: int) -> int:
    body = {"model": "m", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    tokens = 0
    try:
        async with client.stream("POST", f"{base}/v1/completions", json=body, timeout=600) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                choices = json.loads(line[6:]).get("choices") or []
                if choices and choices[0].get("text"):
                    tokens += 1
    except httpx.RemoteProtocolError:
        CUT_STREAMS.append(tokens)  # only the tokens that arrived count
    return tokens


async def _load(base: str, clients: int, max_tokens: int) -> tuple[int, float]:
    async with httpx.AsyncClient() as client:
        started = time.perf_counter()
        counts = await asyncio.gather(*(_stream_one(client, base, PROMPTS[i % len(PROMPTS)], max_tokens)
                                        for i in range(clients)))
        return sum(counts), time.perf_counter() - started


def aggregate_tokens_per_second(base: str, clients: int, max_tokens: int = 128) -> float:
    asyncio.run(_load(base, 1, 8))  # warm-up
    tokens, seconds = asyncio.run(_load(base, clients, max_tokens))
    return tokens / seconds
