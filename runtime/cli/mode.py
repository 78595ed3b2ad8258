"""`--cli`: one-shot completion for shell scripts. stdout carries the prompt (unless
--no-display-prompt) and the completion, nothing else; everything else goes to stderr."""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING

from .. import messages
from ..engine.types import GenerationRequest, SamplingParams
from ..errors import PromptFileUnreadable, UsageError
from ..flags.settings import Settings
from ..flags.values import verbose_prompt_line
from ..bundle.model_loader import load_engine
from ..bundle.payload_format import Payload

if TYPE_CHECKING:  # the type only: importing the engine loads llama.cpp
    from ..engine.engine import Engine
    from ..plan import Plan

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


def run(plan: Plan, payload: Payload | None) -> int:
    settings = plan.settings
    prompt = read_prompt(settings)  # before loading: a missing prompt should not cost seconds
    engine = load_engine(settings, payload, plan.engine)
    try:
        return complete(settings, engine, prompt, plan.sampling)
    finally:
        engine.close()


def complete(settings: Settings, engine: Engine, prompt: str, sampling: SamplingParams) -> int:
    # Everything that can be refused is checked before the first byte goes to stdout.
    tokens = engine.tokenize(prompt, add_special=True, parse_special=True)
    engine.check_fits(len(tokens))
    if sampling.grammar:
        engine.check_grammar(sampling.grammar)
    request = GenerationRequest(tuple(tokens), settings.n_predict, sampling, stop=settings.reverse_prompt or (),
                                special=settings.special)
    if settings.verbose_prompt:
        log.info("%s", verbose_prompt_line(prompt, len(tokens)))
    out = sys.stdout.buffer
    try:
        if not settings.no_display_prompt:
            out.write(prompt.encode("utf-8"))
            out.flush()
        written = "" if settings.no_display_prompt else prompt
        for piece in engine.generate(request):
            if piece.text:
                out.write(piece.text.encode("utf-8"))
                out.flush()
                written = piece.text
            if piece.timings:
                t = piece.timings
                if log.isEnabledFor(logging.INFO) and written and not written.endswith("\n") \
                        and _stdout_is_stderr_terminal():
                    sys.stderr.write("\n")  # the stats on their own line, not after the last word
                log.info("%d tokens in %.2f s (%.1f tok/s); prompt: %d tokens (%.1f tok/s); stopped by %s",
                         t.generated_tokens, t.generation_ms / 1000, t.generation_per_second,
                         t.prompt_tokens, t.prompt_per_second,
                         "end of generation" if piece.finish_reason == "stop" else "the token limit")
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, as Unix tools do.
        _silence_stdout()
    return 0


def _stdout_is_stderr_terminal() -> bool:
    """stdout and stderr are the same terminal: a log line would continue the completion's last line."""
    try:
        return (os.isatty(sys.stdout.fileno()) and os.isatty(sys.stderr.fileno())
                and os.path.samestat(os.fstat(sys.stdout.fileno()), os.fstat(sys.stderr.fileno())))
    except (OSError, ValueError):
        return False


def _silence_stdout() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
