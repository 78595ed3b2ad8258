"""A server whose model calls a tool, for the dialects' tool tests: llama.cpp's tool-call grammars (which
the server runs, as llama-server) let a model write text before its call, so random weights would only
ramble; here a tiny model with Qwen 2.5's template (Hermes-style <tool_call>) is started with a --grammar
that forces the exact call text, which the server then parses as any model's call."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

from .server_fixtures import running_server
from .templates import QWEN25
from .tiny_model import write_tiny_gguf


def gbnf(text: str) -> str:
    """A grammar that admits `text` only."""
    return 'root ::= "' + "".join(f"\\x{ord(c):02X}" if c in '"\\\n' else c for c in text) + '"'


def hermes_call(name: str, arguments: dict) -> str:
    return f'<tool_call>\n{json.dumps({"name": name, "arguments": arguments})}\n</tool_call>'


@contextmanager
def forced_tool_server(executable: Path, directory: Path, call: str, name: str = "tiny", *args: str):
    gguf = write_tiny_gguf(directory / f"{name}.gguf", n_ctx=4096, chat_template=QWEN25)
    with running_server(executable, "-m", str(gguf), "-c", "8192", "-np", "2", "--grammar", gbnf(call), *args,
                        log_path=directory / f"{name}.log") as server:
        yield server
