"""What llama.cpp's generation flags change in the CLI and the chat, resolved once before a mode
starts: the sampling (with --ignore-eos) and the chat's system prompt (-sys, else -p)."""

from __future__ import annotations

import dataclasses

from ..engine.types import SamplingParams
from ..sampling import sampling_from_settings
from .settings import Settings


def mode_sampling(settings: Settings, mode: str) -> SamplingParams:
    return dataclasses.replace(sampling_from_settings(settings, mode), ignore_eos=settings.ignore_eos)


def chat_system_prompt(settings: Settings) -> str | None:
    """-sys is the chat's system prompt; -p doubled as it before -sys existed, and still does."""
    return settings.system_prompt if settings.system_prompt is not None else settings.prompt
