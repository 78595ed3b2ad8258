"""Time to first token for a chat request with one image: ours (the tiny multimodal pair of
tests/support/tiny_multimodal.py built into one executable with its projector) against native llama-server
(same llama.cpp, bench/native.py; built with libmtmd) given the same two files, in one run. Each request
carries an image neither side has seen (so neither finds it in its prompt cache) and asks for one token:
its latency is the time to the first token (image decoded, checked, encoded, prompt decoded, one token
sampled). Alternated rounds; medians and 10th percentiles (on a loaded machine a round can stall for a second
when ggml's OpenMP workers are descheduled at a barrier: the lower percentile shows the undisturbed cost).
Target: ours no more than 5% slower.

    .venv/bin/python bench/images.py [--rounds 40] [--threads 1]
"""

from __future__ import annotations

import argparse
import base64
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
sys.path.insert(0, str(REPO / "tests"))
from load import free_port, serving  # noqa: E402
from native import ensure_native_tools  # noqa: E402
from results import machine, save  # noqa: E402
from support.tiny_multimodal import png_bytes, write_tiny_multimodal  # noqa: E402


def first_token_ms(base: str, image: bytes) -> float:
    url = "data:image/png;base64," + base64.b64encode(image).decode()
    body = {"model": "m", "max_tokens": 1, "temperature": 0, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is in this picture?"}, {"type": "image_url", "image_url": {"url": url}}]}]}
    started = time.perf_counter()
    response = httpx.post(base + "/v1/chat/completions", json=body, timeout=120)
    elapsed = (time.perf_counter() - started) * 1000
    response.raise_for_status()
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    # One thread by default: with two, a loaded machine stalls both sides' OpenMP barriers for up to seconds.
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--size", type=int, default=640, help="the image's width (height 3/4 of it), in pixels")
    args = parser.parse_args()
    native_bin = ensure_native_tools(log=lambda m: print(m, file=sys.stderr))
    threads = str(args.threads)
    common = ["-c", "1024", "-np", "1", "-t", threads]
    with tempfile.TemporaryDirectory(prefix="llmpack-images-") as work:
        model, projector = write_tiny_multimodal(Path(work))
        exe = Path(work) / "tiny-vision.llmpack"
        subprocess.run([str(Path(sys.executable).parent / "llmpack"), "build", str(model), "--mmproj", str(projector),
                        "-o", str(exe), "-q", "--gpu", "none"], check=True)
        ours_port, native_port = free_port(), free_port()
        ours = [str(exe), "--server", "--nobrowser", "--port", str(ours_port), "--log-disable", *common]
        native = [str(native_bin / "llama-server"), "-m", str(model), "--mmproj", str(projector),
                  "--port", str(native_port), "--jinja", "--no-webui", *common]
        env = {**os.environ, "LD_LIBRARY_PATH": str(native_bin)}
        samples: dict[str, list[float]] = {"ours": [], "native": []}
        with serving(ours, ours_port) as ours_base, serving(native, native_port, env=env) as native_base:
            bases = {"ours": ours_base, "native": native_base}
            for side, base in bases.items():  # warm-up: each side's first image builds its compute graphs
                first_token_ms(base, png_bytes(args.size, args.size * 3 // 4, seed=10_000))
            for i in range(args.rounds):
                image = png_bytes(args.size, args.size * 3 // 4, seed=i)
                order = ("ours", "native") if i % 2 == 0 else ("native", "ours")
                for side in order:
                    samples[side].append(first_token_ms(bases[side], image))
    medians = {side: statistics.median(values) for side, values in samples.items()}
    p10 = {side: statistics.quantiles(values, n=10)[0] for side, values in samples.items()}
    ratio, ratio_p10 = medians["ours"] / medians["native"], p10["ours"] / p10["native"]
    print(f"time to first token, one {args.size}x{args.size * 3 // 4} PNG, tiny pair, -t {threads}: median ours "
          f"{medians['ours']:.1f} ms, native llama-server {medians['native']:.1f} ms, ours/native {ratio:.3f}; "
          f"10th percentile ours {p10['ours']:.1f} ms, native {p10['native']:.1f} ms, {ratio_p10:.3f} (target <= 1.05)")
    path = save("images", {"machine": machine(int(threads)), "rounds": args.rounds, "image": [args.size, args.size * 3 // 4],
                           "first_token_ms": samples, "medians": medians, "p10": p10, "ratio": ratio,
                           "ratio_p10": ratio_p10})
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
