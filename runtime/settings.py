"""The runtime's one settings schema: every flag, its llamafile/llama.cpp spelling, default and help.

`Settings` is the only thing passed past `main()`; the argument parser and the man page's option list
are both derived from its fields, so they cannot drift apart.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

from . import messages
from .errors import UsageError

MODES = ("cli", "chat", "server")


def _flag(*flags: str, help: str, default: Any = None, metavar: str | None = None,
          group: str = "general", minimum: float | None = None, maximum: float | None = None) -> Any:
    meta = {"flags": flags, "help": help, "metavar": metavar, "group": group,
            "minimum": minimum, "maximum": maximum}
    return field(default=default, metadata=meta)


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class Settings:
    # Modes
    cli: bool = _flag("--cli", help="one-shot completion of -p/-f for shell scripts: stdout carries only text", default=False, group="mode")
    chat: bool = _flag("--chat", help="terminal chatbot only (no server)", default=False, group="mode")
    server: bool = _flag("--server", help="OpenAI-compatible HTTP server only", default=False, group="mode")

    # Model and compute
    model: str | None = _flag("-m", "--model", help="GGUF weights to use instead of the embedded ones", metavar="FILE", group="model")
    n_gpu_layers: int = _flag("-ngl", "--n-gpu-layers", "--gpu-layers", help="layers to offload to the GPU (999 = all)", default=0, metavar="N", group="model", minimum=0)
    ctx_size: int = _flag("-c", "--ctx-size", help="context size in tokens (0 = the model's trained maximum)", default=8192, metavar="N", group="model", minimum=0)
    batch_size: int = _flag("-b", "--batch-size", help="prompt tokens processed per batch", default=2048, metavar="N", group="model", minimum=1)
    threads: int = _flag("-t", "--threads", help="CPU threads (0 = all usable cores)", default=0, metavar="N", group="model", minimum=0)
    parallel: int = _flag("-np", "--parallel", help="sequences the server decodes at once", default=4, metavar="N", group="model", minimum=1, maximum=256)
    no_mmap: bool = _flag("--no-mmap", help="read the weights into memory instead of mapping them", default=False, group="model")
    mlock: bool = _flag("--mlock", help="lock the weights in RAM (no swapping)", default=False, group="model")
    embedding: bool = _flag("--embedding", "--embeddings", help="enable the /v1/embeddings endpoint", default=False, group="model")
    chat_template: str | None = _flag("--chat-template", help="chat template to use instead of the model's (a Jinja template or a name: chatml, gemma, llama3)", metavar="TEMPLATE", group="model")
    verify: bool = _flag("--verify", help="re-hash the embedded weights against their recorded sha256, then continue", default=False, group="model")

    # Prompt and output
    prompt: str | None = _flag("-p", "--prompt", help="the prompt (--cli) or the system prompt (--chat)", metavar="TEXT", group="prompt")
    file: str | None = _flag("-f", "--file", help="read the prompt from FILE ('-' reads stdin)", metavar="FILE", group="prompt")
    n_predict: int = _flag("-n", "--n-predict", help="tokens to generate (-1 = until the model stops or the context is full)", default=-1, metavar="N", group="prompt", minimum=-1)
    no_display_prompt: bool = _flag("--no-display-prompt", "--silent-prompt", help="do not echo the prompt before the completion (--cli)", default=False, group="prompt")

    # Sampling
    temp: float | None = _flag("--temp", "--temperature", help="sampling temperature; 0 = greedy (default: 0.8, 0.0 in chat)", metavar="T", group="sampling", minimum=0.0)
    top_k: int = _flag("--top-k", help="sample among the K most likely tokens (0 = all)", default=40, metavar="K", group="sampling", minimum=0)
    top_p: float = _flag("--top-p", help="nucleus sampling: smallest set with probability >= P", default=0.95, metavar="P", group="sampling", minimum=0.0, maximum=1.0)
    min_p: float = _flag("--min-p", help="drop tokens less likely than P times the most likely one", default=0.05, metavar="P", group="sampling", minimum=0.0, maximum=1.0)
    repeat_penalty: float = _flag("--repeat-penalty", help="penalty for repeated tokens (1.0 = off)", default=1.0, metavar="X", group="sampling", minimum=0.0)
    repeat_last_n: int = _flag("--repeat-last-n", help="how many recent tokens the penalties look at", default=64, metavar="N", group="sampling", minimum=-1)
    presence_penalty: float = _flag("--presence-penalty", help="penalty for tokens already present (0 = off)", default=0.0, metavar="X", group="sampling")
    frequency_penalty: float = _flag("--frequency-penalty", help="penalty growing with a token's count (0 = off)", default=0.0, metavar="X", group="sampling")
    seed: int = _flag("-s", "--seed", help="random seed (-1 = random)", default=-1, metavar="N", group="sampling", minimum=-1)
    grammar: str | None = _flag("--grammar", help="constrain output with a GBNF grammar", metavar="GBNF", group="sampling")
    grammar_file: str | None = _flag("--grammar-file", help="read the GBNF grammar from FILE", metavar="FILE", group="sampling")

    # Server
    host: str = _flag("--host", help="address the server listens on", default="127.0.0.1", metavar="ADDR", group="server")
    port: int = _flag("--port", help="port the server listens on", default=8080, metavar="N", group="server", minimum=0, maximum=65535)
    nobrowser: bool = _flag("--nobrowser", help="do not open a browser when the server starts", default=False, group="server")
    api_key: str | None = _flag("--api-key", help="require 'Authorization: Bearer KEY' on API routes", metavar="KEY", group="server")

    # Logging
    log_disable: bool = _flag("--log-disable", help="no logs or progress on stderr", default=False, group="logging")
    verbose: bool = _flag("--verbose", help="llama.cpp's full log, and tracebacks on errors", default=False, group="logging")

    @property
    def mode(self) -> str | None:
        """The mode flag given, or None (then the caller picks the default mode)."""
        return next((m for m in MODES if getattr(self, m)), None)

    def temperature(self, mode: str) -> float:
        if self.temp is not None:
            return self.temp
        return 0.0 if mode == "chat" else 0.8

    def thread_count(self) -> int:
        return self.threads or default_threads()


GROUP_TITLES = {
    "mode": "Modes",
    "model": "Model and compute",
    "prompt": "Prompt and output",
    "sampling": "Sampling",
    "server": "Server",
    "logging": "Logging",
}


def option_fields() -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(Settings) if "flags" in f.metadata]


def _field_type(f: dataclasses.Field) -> type:
    text = str(f.type)
    for name, kind in (("bool", bool), ("int", int), ("float", float)):
        if text.startswith(name):
            return kind
    return str


class _Parser(argparse.ArgumentParser):
    """argparse that raises our one-line UsageError instead of printing usage and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        if message.startswith("unrecognized arguments"):
            raise UsageError(messages.UNKNOWN_FLAG.format(arg=message.split(": ", 1)[1]))
        raise UsageError(f"error: {message}")


def _converter(f: dataclasses.Field, kind: type):
    label = "/".join(f.metadata["flags"])
    lo, hi = f.metadata["minimum"], f.metadata["maximum"]

    def convert(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise UsageError(messages.BAD_VALUE.format(
                flag=label, reason=f"expected {'an integer' if kind is int else 'a number'}, got {text!r}")) from None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            bounds = f"at least {lo}" if hi is None else f"between {lo} and {hi}"
            raise UsageError(messages.BAD_VALUE.format(flag=label, reason=f"must be {bounds}, got {text}"))
        return value

    return convert


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="llmpack", add_help=False, allow_abbrev=False)
    parser.add_argument("-h", "--help", action="store_true")
    parser.add_argument("--version", action="store_true")
    for f in option_fields():
        kind = _field_type(f)
        if kind is bool:
            parser.add_argument(*f.metadata["flags"], dest=f.name, action="store_true", default=f.default)
        else:
            parser.add_argument(*f.metadata["flags"], dest=f.name, type=_converter(f, kind),
                                default=f.default, metavar=f.metadata["metavar"])
    return parser


@dataclass(frozen=True)
class ParsedArgs:
    settings: Settings
    show_help: bool
    show_version: bool


def parse_args(argv: Sequence[str]) -> ParsedArgs:
    """Parses the (already merged) command line. Raises UsageError with one line for the user."""
    namespace = build_parser().parse_args(list(argv))
    values = vars(namespace)
    show_help, show_version = values.pop("help"), values.pop("version")
    settings = Settings(**values)
    if sum(getattr(settings, m) for m in MODES) > 1:
        raise UsageError(messages.CONFLICTING_MODES)
    return ParsedArgs(settings, show_help, show_version)


def describe_options() -> str:
    """The OPTIONS section of the man page, generated from the schema."""
    lines: list[str] = []
    for group, title in GROUP_TITLES.items():
        lines.append(f"  {title}:")
        for f in (f for f in option_fields() if f.metadata["group"] == group):
            spelling = ", ".join(f.metadata["flags"])
            if f.metadata["metavar"]:
                spelling += f" {f.metadata['metavar']}"
            default = "" if f.default is None or f.default is False else f" [default: {f.default}]"
            lines.append(f"    {spelling}")
            lines.append(f"        {f.metadata['help']}{default}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
