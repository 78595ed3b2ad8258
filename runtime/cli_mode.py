"""`--cli`: one-shot completion for shell scripts. stdout carries the prompt (unless
--no-display-prompt) and the completion, nothing else; everything else goes to stderr."""

from __future__ import annotations

import logging
import os
import sys

from . import messages
from .engine import Engine, GenerationRequest
from .errors import PromptFileUnreadable, UsageError
from .model_loader import load_engine
from .payload import Payload
from .sampling import sampling_from_settings
from .settings import Settings

log = logging.getLogger(__name__)


def read_prompt(settings: Settings) -> str:
    if settings.file is None:
        if settings.prompt is None:
            raise UsageError(messages.NO_PROMPT)
        return settings.prompt
    if settings.file == "-":
        return sys.stdin.buffer.read().decode("utf-8", "replace")
    try:
        with open(settings.file, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError as exc:
        raise PromptFileUnreadable(settings.file, exc.strerror or str(exc)) from None


def run(settings: Settings, payload: Payload | None) -> int:
    prompt = read_prompt(settings)  # before loading: a missing prompt should not cost seconds
    engine = load_engine(settings, payload)
    try:
        return complete(settings, engine, prompt)
    finally:
        engine.close()


def complete(settings: Settings, engine: Engine, prompt: str) -> int:
    tokens = engine.tokenize(prompt, add_special=True, parse_special=True)
    engine.check_fits(len(tokens))
    request = GenerationRequest(tuple(tokens), settings.n_predict, sampling_from_settings(settings, "cli"))
    out = sys.stdout.buffer
    try:
        if not settings.no_display_prompt:
            out.write(prompt.encode("utf-8"))
            out.flush()
        for piece in engine.generate(request):
            if piece.text:
                out.write(piece.text.encode("utf-8"))
                out.flush()
            if piece.timings:
                t = piece.timings
                log.info("%d tokens in %.2f s (%.1f tok/s); prompt: %d tokens (%.1f tok/s); stopped by %s",
                         t.generated_tokens, t.generation_ms / 1000, t.generation_per_second,
                         t.prompt_tokens, t.prompt_per_second,
                         "end of generation" if piece.finish_reason == "stop" else "the token limit")
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, as Unix tools do.
        _silence_stdout()
    return 0


def _silence_stdout() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
