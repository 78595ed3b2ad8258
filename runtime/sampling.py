"""Turns the settings' sampling flags into the engine's SamplingParams."""

from __future__ import annotations

from pathlib import Path

from . import messages
from .engine.types import SamplingParams
from .errors import GrammarFlagInvalid, UserError
from .flags.settings import Settings
from .grammar.check import GrammarRefused, check_grammar


def grammar_text(settings: Settings) -> str | None:
    """The --grammar or --grammar-file text; a grammar that grammar/check.py refuses is a bad flag value
    (exit 2), so that llama.cpp never parses it."""
    if settings.grammar_file:
        flag = f"--grammar-file {settings.grammar_file}"
        try:
            text = Path(settings.grammar_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise UserError(messages.GRAMMAR_FILE_UNREADABLE.format(path=settings.grammar_file, reason=exc.strerror)) from None
        except UnicodeDecodeError:
            raise GrammarFlagInvalid(flag, "the file is not UTF-8 text") from None
    else:
        # -j/--json-schema arrives here already turned into a grammar (runtime/flags/values.py).
        flag = "-j/--json-schema" if getattr(settings, "json_schema", None) is not None else "--grammar"
        text = settings.grammar
    if text:
        try:
            check_grammar(text)
        except GrammarRefused as exc:
            raise GrammarFlagInvalid(flag, exc.reason) from None
    return text


def sampling_from_settings(settings: Settings, mode: str, grammar: str | None) -> SamplingParams:
    """The sampling flags as SamplingParams; `grammar` is grammar_text's, read once by the caller."""
    return SamplingParams(
        temperature=settings.temperature(mode),
        top_k=settings.top_k,
        top_p=settings.top_p,
        min_p=settings.min_p,
        repeat_penalty=settings.repeat_penalty,
        repeat_last_n=settings.repeat_last_n,
        presence_penalty=settings.presence_penalty,
        frequency_penalty=settings.frequency_penalty,
        seed=settings.seed,
        grammar=grammar,
    )
