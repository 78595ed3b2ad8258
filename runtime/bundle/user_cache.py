"""The per-user cache: where the launcher unpacks runtimes (runtime/<key>/), and where weights are
extracted on platforms that cannot map them in place. The same rule as the launcher's
(runtime/launcher/launcher.c) and the bundler's: $LLMPACK_CACHE, else $XDG_CACHE_HOME/llmpack, else
~/.cache/llmpack; on Windows (runtime/launcher/launcher_windows.c) %LLMPACK_CACHE%, else
%LOCALAPPDATA%\llmpack."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

# The launcher names a runtime's folder by the first 16 hex digits of the runtime pack's sha256.
KEY_LENGTH = 16


def cache_root() -> Path:
    if os.environ.get("LLMPACK_CACHE"):
        return Path(os.environ["LLMPACK_CACHE"])
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "llmpack"
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "llmpack"
    return Path.home() / ".cache" / "llmpack"


def runtime_entry(runtime_sha256: str) -> Path:
    return cache_root() / "runtime" / runtime_sha256[:KEY_LENGTH]


def clean_runtimes(keep: str | None) -> list[Path]:
    """Removes every unpacked runtime but `keep` (this executable's key); returns what it removed.
    A runtime still running from a removed folder keeps its open files (POSIX), but could not import a
    module it had not loaded yet: clean when other llmpack executables are not running."""
    folder = cache_root() / "runtime"
    removed = []
    for entry in sorted(folder.iterdir()) if folder.is_dir() else []:
        if entry.name != keep and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed
