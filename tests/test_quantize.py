"""`llmpack build --quantize`: llama.cpp quantizes an F32 GGUF at build time; refusals are clear."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from llmpack.bundler import messages
from support.commands import error_line, llmpack, run

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("quant", ["Q8_0", "Q4_K_M"])
def test_quantized_bundle_runs_and_is_smaller(tiny_gguf: Path, tmp_path: Path, quant: str) -> None:
    output = tmp_path / f"tiny-{quant}.llmpack"
    built = llmpack("build", str(tiny_gguf), "-o", str(output), "--quantize", quant)
    assert built.returncode == 0, built.stderr
    assert "quantizing tiny.gguf to " + quant in built.stderr
    info = json.loads(llmpack("inspect", str(output), "--json").stdout)
    assert info["manifest"]["model"]["quantization"] == quant
    assert info["manifest"]["model"]["source"]["quantized_from"] == "F32"
    assert info["gguf_length"] < tiny_gguf.stat().st_size / 3
    completion = run([str(output), "--cli", "-p", "hello", "-n", "8", "--temp", "0", "--log-disable"])
    assert completion.returncode == 0 and completion.stdout.startswith("hello")
    assert sorted(p.name for p in tmp_path.iterdir()) == [output.name]  # the temporary GGUF is gone


def test_refuses_to_requantize_without_force(tiny_gguf: Path, tmp_path: Path) -> None:
    first = tmp_path / "q8.llmpack"
    assert llmpack("build", str(tiny_gguf), "-o", str(first), "--quantize", "Q8_0", "-q").returncode == 0
    q8 = tmp_path / "q8.gguf"
    assert llmpack("unpack", str(first), "-o", str(q8)).returncode == 0
    refused = llmpack("build", str(q8), "-o", str(tmp_path / "again.llmpack"), "--quantize", "Q4_K_M")
    assert refused.returncode == 1
    assert refused.stderr.strip() == error_line(messages.QUANT_ALREADY.format(path=q8, current="Q8_0"))
    forced = llmpack("build", str(q8), "-o", str(tmp_path / "again.llmpack"), "--quantize", "Q4_K_M",
                     "--force-quantize", "-q")
    assert forced.returncode == 0, forced.stderr


def test_unknown_quant_type(tiny_gguf: Path, tmp_path: Path) -> None:
    result = llmpack("build", str(tiny_gguf), "-o", str(tmp_path / "x.llmpack"), "--quantize", "Q3_FANCY")
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: --quantize Q3_FANCY: unknown type (choose one of Q4_0")
    assert not list(tmp_path.iterdir())
