"""Checks a freshly built executable's default arguments by running it once with --version: the
runtime parses the stored arguments before answering, so a typo fails the build, not the user."""

from __future__ import annotations

import subprocess
from pathlib import Path

from . import messages
from .errors import BuildError


def check_default_args(executable: Path, default_args: list[str], remove: bool = True) -> None:
    """With `remove`, an executable that fails the check (or whose check is interrupted) is deleted;
    not when it replaced the user's own file (an in-place repack): that would lose their weights."""
    if not default_args:
        return
    try:
        result = subprocess.run([str(executable.resolve()), "--version"], capture_output=True, text=True, timeout=120)
    except BaseException:  # Ctrl-C, SIGTERM: an unchecked executable is not left behind either
        if remove:
            executable.unlink(missing_ok=True)
        raise
    if result.returncode != 0:
        detail = (result.stderr.strip().splitlines() or ["exit status %d" % result.returncode])[-1]
        if remove:
            executable.unlink(missing_ok=True)
        raise BuildError(messages.DEFAULT_ARGS_REJECTED.format(detail=detail))
