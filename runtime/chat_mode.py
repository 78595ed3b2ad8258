"""`--chat` (the chatbot alone) and the default mode (the chatbot in the foreground, the OpenAI server
in the background on the same loaded model, as llamafile does)."""

from __future__ import annotations

import logging
import sys

from . import __version__, messages
from .chat.render import Console
from .chat.repl import Repl, make_prompt_session
from .chat.session import ChatSession, RawFormatter
from .chat_template import formatter_for
from .engine import Engine, gpu_offload_supported, load_backends
from .errors import UserError
from .model_loader import load_engine
from .payload import Payload
from .sampling import sampling_from_settings
from .settings import Settings

log = logging.getLogger(__name__)


def run(settings: Settings, payload: Payload | None) -> int:
    engine = load_engine(settings, payload)
    try:
        return chat(settings, engine, server_url=None)
    finally:
        engine.close()


def run_default(settings: Settings, payload: Payload | None) -> int:
    from .server_mode import start_background_server

    engine = load_engine(settings, payload)
    server = None
    try:
        try:
            server = start_background_server(settings, engine)
        except Exception as exc:  # noqa: BLE001 - e.g. the port is taken: the chat is still worth having
            reason = str(exc).removeprefix("error: ") if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
            log.warning(messages.CHAT_SERVER_FAILED.format(reason=reason))
        return chat(settings, engine, server_url=server.url if server else None)
    finally:
        if server is not None:
            server.stop()  # before the engine it uses goes away
        engine.close()


def chat(settings: Settings, engine: Engine, server_url: str | None) -> int:
    raw = not (engine.chat_template or settings.chat_template)
    # llamafile's rule: a GGUF without a chat template is a base model, so the chat continues text.
    formatter = RawFormatter() if raw else formatter_for(engine.chat_template, engine.bos_token,
                                                          engine.eos_token, settings.chat_template)
    session = ChatSession(engine, formatter, sampling_from_settings(settings, "chat"), settings.n_predict,
                          system=settings.prompt)
    if sys.stdin.isatty():
        console = Console()
        show_banner(console, banner_lines(settings, engine, server_url, raw))
        return Repl(session, console, terminal_fd=sys.stdin.fileno()).run(make_prompt_session())
    # No terminal: stdout carries only the replies; the banner is a log line on stderr.
    for line in banner_lines(settings, engine, server_url, raw):
        log.info("%s", line)
    return Repl(session, Console(sys.stdout, color=False, errors=sys.stderr)).run_lines(sys.stdin)


def describe_compute(settings: Settings, engine: Engine) -> str:
    count = settings.thread_count()
    threads = f"{count} CPU thread{'s' if count > 1 else ''}"
    if settings.n_gpu_layers > 0 and gpu_offload_supported():
        devices = ", ".join(d for d in load_backends() if not d.upper().startswith("CPU")) or "GPU"
        total = int(engine.metadata.get(f"{engine.metadata.get('general.architecture', '')}.block_count", 0) or 0)
        layers = "all layers" if total and settings.n_gpu_layers > total else f"{settings.n_gpu_layers} layers"
        return f"{devices} ({layers}), {threads}"
    return threads


def banner_lines(settings: Settings, engine: Engine, server_url: str | None, raw: bool = False) -> list[str]:
    lines = [
        f"software: llmpack {__version__}",
        f"model:    {engine.model_name}",
        *([f"mode:     {messages.CHAT_RAW_MODE}"] if raw else []),
        f"context:  {engine.n_ctx} tokens",
        f"compute:  {describe_compute(settings, engine)}",
    ]
    if server_url:
        lines.append(f"server:   {server_url}")
    return lines


def show_banner(console: Console, lines: list[str]) -> None:
    for line in lines:
        key, _, value = line.partition(":")
        console.styled([("class:banner.key", key + ":"), ("", value + "\n")])
    console.line(messages.CHAT_HELP_HINT)
    console.write("\n")
