"""Differential: every template of the vendored llama.cpp's models/templates/, ours against native
llama-server built from the same llama.cpp (bench/native.py, cached): the same conversations (plain,
tools with calls and results, earlier reasoning, thinking off, a reasoning effort) render the same
prompt, and a thinking model's output (forced by a grammar, so no CPU can change it) parses the same,
whole and streamed. bench/chat_formats.py is the report; this test holds it at M of M."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(sys.platform == "win32", reason="build/chat-shim.sh has no Windows recipe yet")]


def test_every_template_renders_and_parses_as_native_llama_server(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO))
    from bench import chat_formats as bench

    binary = bench.ensure_native_tools(log=lambda m: None) / "llama-server"
    model = bench.write_tiny_gguf(tmp_path / "tiny.gguf", chat_template=None, n_ctx=8192)
    vocab = bench.load_vocab(model)
    templates = sorted(bench.templates_dir().glob("*.jinja"))
    assert len(templates) >= 70
    different = {}
    for template in templates:
        result = bench.compare(binary, model, vocab, template)
        if "error" in result or any(v != "same" for part in ("render", "parse") for v in result[part].values()):
            different[template.name] = result
    assert not different, f"{len(different)} of {len(templates)} templates differ: {sorted(different)}\n{different}"
