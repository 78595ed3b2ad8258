"""Turns the settings' sampling flags into the engine's SamplingParams."""

from __future__ import annotations

from pathlib import Path

from .engine import SamplingParams
from .errors import UserError
from .settings import Settings


def grammar_text(settings: Settings) -> str | None:
    if settings.grammar_file:
        try:
            return Path(settings.grammar_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise UserError(f"error: cannot read grammar file {settings.grammar_file}: {exc.strerror}") from None
    return settings.grammar


def sampling_from_settings(settings: Settings, mode: str) -> SamplingParams:
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
        grammar=grammar_text(settings),
    )
