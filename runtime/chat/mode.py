"""`--chat` (the chatbot alone) and the default mode (the chatbot in the foreground, the OpenAI server
in the background on the same loaded model, as llamafile does)."""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

from .. import __version__, messages
from ..formats.chat_template import ChatFormatter, formatter_for
from ..engine.context_size import describe_context
from ..engine.native import gpu_offload_supported, load_backends
from ..errors import UserError
from ..flags.settings import Settings
from ..bundle.model_loader import load_engine
from ..bundle.payload_format import Payload
from .render import Console
from .repl import Repl, make_prompt_session
from .session import ChatSession

if TYPE_CHECKING:  # the type only: importing the engine loads llama.cpp
    from ..engine.engine import Engine
    from ..plan import Plan

log = logging.getLogger(__name__)


def run(plan: Plan, payload: Payload | None) -> int:
    settings = plan.settings
    engine = load_engine(settings, payload, plan.engine)
    try:
        return chat(plan, engine, chat_formatter(settings, engine), server_url=None)
    finally:
        engine.close()


def run_default(plan: Plan, payload: Payload | None) -> int:
    from ..server.mode import start_background_server

    settings = plan.settings
    # The chat is one more sequence of the engine the server batches (-np counts it, see plan.py): a chat
    # reply and API requests decode together, and neither waits for the other to finish.
    engine = load_engine(settings, payload, plan.engine)
    server = None
    try:
        formatter = chat_formatter(settings, engine)  # compiled once, for the chat and the server
        try:
            server = start_background_server(plan, engine, formatter)
        except Exception as exc:  # noqa: BLE001 - e.g. the port is taken: the chat is still worth having
            reason = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
            log.warning(messages.CHAT_SERVER_FAILED.format(reason=reason))
        return chat(plan, engine, formatter, server_url=server.url if server else None)
    finally:
        if server is not None:
            server.stop()  # before the engine it uses goes away
        engine.close()


def chat_formatter(settings: Settings, engine: Engine) -> ChatFormatter:
    """The loaded model's formatter (UserError when its template does not compile). A model without a
    template chats in ChatML, as the server does: see formatter_for."""
    formatter = formatter_for(engine.chat_template, engine.bos_token, engine.eos_token, settings.chat_template)
    if formatter.fallback:
        log.warning(messages.TEMPLATE_FALLBACK_WARNING)
    return formatter


def chat(plan: Plan, engine: Engine, formatter: ChatFormatter, server_url: str | None) -> int:
    settings = plan.settings
    session = ChatSession(engine, formatter, plan.sampling, settings.n_predict,
                          system=plan.system_prompt, stop=settings.reverse_prompt or (),
                          verbose_prompt=settings.verbose_prompt, thinking=settings.reasoning != "off",
                          reasoning_format=settings.reasoning_format)
    if sys.stdin.isatty():
        console = Console()
        show_banner(console, banner_lines(settings, engine, server_url, formatter, plan.names.id(engine.model_name)))
        return Repl(session, console, terminal_fd=sys.stdin.fileno()).run(make_prompt_session())
    # No terminal: stdout carries only the replies; the banner is a log line on stderr.
    for line in banner_lines(settings, engine, server_url, formatter, plan.names.id(engine.model_name)):
        log.info("%s", line)
    # Command answers and notices go to stderr too, so that stdout is the replies and nothing else.
    return Repl(session, Console(sys.stdout, color=False, notes=sys.stderr)).run_lines(sys.stdin)


def describe_compute(settings: Settings, engine: Engine) -> str:
    count = settings.thread_count()
    threads = f"{count} CPU thread{'s' if count > 1 else ''}"
    placement = getattr(engine, "offload", None)  # where the engine put the layers (-ngl auto included)
    if placement is not None and placement.offloaded:
        return f"{placement.describe()}, {threads}"
    if settings.n_gpu_layers > 0 and gpu_offload_supported():
        devices = ", ".join(d for d in load_backends() if not d.upper().startswith("CPU")) or "GPU"
        total = int(engine.metadata.get(f"{engine.metadata.get('general.architecture', '')}.block_count", 0) or 0)
        layers = "all layers" if total and settings.n_gpu_layers > total else f"{settings.n_gpu_layers} layers"
        return f"{devices} ({layers}), {threads}"
    return threads


def banner_lines(settings: Settings, engine: Engine, server_url: str | None,
                 formatter: ChatFormatter | None = None, name: str | None = None) -> list[str]:
    """`name`: the model's name (plan.model_names: the file's, or -a's), else the GGUF's."""
    lines = [
        f"software: llmpack {__version__}",
        f"model:    {name or engine.model_name}",
        *([f"template: {formatter.description}"] if formatter is not None else []),
        f"context:  {describe_context(engine.n_ctx, getattr(engine, 'context_size', None))}",
        f"compute:  {describe_compute(settings, engine)}",
    ]
    if server_url:
        lines.append(f"server:   {server_url}")
        parallel = messages.CHAT_PARALLEL if settings.parallel > 1 else messages.CHAT_PARALLEL_ONE
        lines.append(f"parallel: {parallel.format(n=settings.parallel)}")
    return lines


def show_banner(console: Console, lines: list[str]) -> None:
    for line in lines:
        key, _, value = line.partition(":")
        console.styled([("class:banner.key", key + ":"), ("", value + "\n")])
    console.line(messages.CHAT_HELP_HINT)
    console.write("\n")
