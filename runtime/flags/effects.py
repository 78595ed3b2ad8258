"""What llama.cpp's generation flags change in the chat: its system prompt (-sys, else -p). Used by
runtime/plan.py, which resolves every flag once before a mode starts."""

from __future__ import annotations

from .settings import Settings


def chat_system_prompt(settings: Settings) -> str | None:
    """-sys is the chat's system prompt; -p doubled as it before -sys existed, and still does."""
    return settings.system_prompt if settings.system_prompt is not None else settings.prompt
