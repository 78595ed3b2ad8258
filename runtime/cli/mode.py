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
    if settings.image:
        tokens, media = _with_media(engine, prompt, settings.image)
    else:
        tokens, media = engine.tokenize(prompt, add_special=True, parse_special=True), None
    engine.check_fits(len(tokens))
    if sampling.grammar:
        engine.check_grammar(sampling.grammar)
    request = GenerationRequest(tuple(tokens), settings.n_predict, sampling, stop=settings.reverse_prompt or (),
                                special=settings.special, media=media)
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


MEDIA_MARKER = "<__media__>"  # llama.cpp's default marker (mtmd_default_marker), as mtmd-cli's prompts write it
MEDIA_FILE_REFUSED = "--image {path}: {problem}"


def _with_media(engine: Engine, prompt: str, files: str) -> tuple[list[int], object]:
    """--image/--audio: the files, checked from their headers, where -p marks them (else before it)."""
    from ..engine.media_check import MediaProblem, inspect

    data = []
    for path in [p for p in files.split(",") if p]:
        try:
            with open(path, "rb") as f:
                content = f.read()
            inspect(content)
        except OSError as exc:
            raise UsageError(MEDIA_FILE_REFUSED.format(path=path, problem=exc.strerror or exc)) from None
        except MediaProblem as exc:
            raise UsageError(MEDIA_FILE_REFUSED.format(path=path, problem=exc)) from None
        data.append(content)
    marker = engine.projector.marker if engine.projector is not None else MEDIA_MARKER
    if MEDIA_MARKER in prompt:
        text = prompt.replace(MEDIA_MARKER, marker)
    else:
        text = marker * len(data) + prompt
    return engine.tokenize_media(text, data, True, True)


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
