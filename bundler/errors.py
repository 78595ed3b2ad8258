"""Errors a user can cause and fix; `cli.main` prints them as one line on stderr.

The one place that adds "error: " to what messages.py stores (as runtime/errors.py does for the runtime)."""

from __future__ import annotations

import os

ERROR_PREFIX = "error: "
DEBUG_VARIABLE = "LLMPACK_DEBUG"


def error_line(message: str) -> str:
    return ERROR_PREFIX + message


def debug_requested() -> bool:
    """LLMPACK_DEBUG=1: a traceback with every error (the runtime's --verbose does the same there)."""
    return bool(os.environ.get(DEBUG_VARIABLE))


class BuildError(Exception):
    """A message meant for the user, shown without a traceback."""

    exit_code = 1
