"""Default arguments stored in the bundle, merged with the user's as llamafile merges its `.args`."""

from __future__ import annotations

from typing import Sequence

PLACEHOLDER = "..."
# The flags that choose a mode: the user's choice replaces a stored one instead of conflicting with it.
MODE_FLAGS = ("--cli", "--chat", "--server", "--rpc-server")


def merge_arguments(defaults: Sequence[str], user: Sequence[str]) -> list[str]:
    """The user's arguments replace a `...` among the defaults, or follow them (later flags win).

    A mode flag among the user's drops the stored ones: `--args=--server` makes serving the default,
    and `./x --cli -p hi` must still complete. Two modes typed by the user stay a conflict."""
    if any(arg in MODE_FLAGS for arg in user):
        defaults = [arg for arg in defaults if arg not in MODE_FLAGS]
    if PLACEHOLDER in defaults:
        at = list(defaults).index(PLACEHOLDER)
        rest = [arg for arg in defaults[at + 1:] if arg != PLACEHOLDER]
        return [*defaults[:at], *user, *rest]
    return [*defaults, *user]


def stored_arguments(manifest: dict) -> list[str]:
    """The default arguments `llmpack build --args` recorded in the manifest."""
    stored = manifest.get("default_args", [])
    return [str(arg) for arg in stored] if isinstance(stored, list) else []
