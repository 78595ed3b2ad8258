"""Default arguments stored in the bundle, merged with the user's as llamafile merges its `.args`."""

from __future__ import annotations

from typing import Sequence

PLACEHOLDER = "..."


def merge_arguments(defaults: Sequence[str], user: Sequence[str]) -> list[str]:
    """The user's arguments replace a `...` among the defaults, or follow them (later flags win)."""
    if PLACEHOLDER in defaults:
        at = list(defaults).index(PLACEHOLDER)
        rest = [arg for arg in defaults[at + 1:] if arg != PLACEHOLDER]
        return [*defaults[:at], *user, *rest]
    return [*defaults, *user]
