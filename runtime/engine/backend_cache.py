"""Unpacks the CPU backend variants once, into a cache keyed by their content hash.

The frozen runtime carries llama.cpp's CPU backends (one library per instruction-set level, ~19 MB) as
one zip named `ggml-backends-<hash>.zip`. PyInstaller's bootloader would unpack loose libraries at every
start; the zip is unpacked once per machine and version, and every later start reuses the folder.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

log = logging.getLogger(__name__)
ARCHIVE_PREFIX = "ggml-backends-"
COMPLETE = ".complete"


def cache_root() -> Path:
    return Path(os.environ.get("LLMPACK_CACHE") or Path.home() / ".cache" / "llmpack") / "backends"


def unpacked_backends(library_dir: Path) -> Path | None:
    """The folder holding the unpacked variants, or None when this runtime has no backend archive."""
    archive = next(iter(sorted(library_dir.glob(f"{ARCHIVE_PREFIX}*.zip"))), None)
    if archive is None:
        return None
    key = archive.stem.removeprefix(ARCHIVE_PREFIX)
    for root in (cache_root(), library_dir / "unpacked"):  # the second: a read-only home
        target = root / key
        if (target / COMPLETE).exists():
            return target
        try:
            return _unpack(archive, target)
        except OSError as exc:
            log.debug("cannot unpack the CPU backends into %s: %s", root, exc)
    return None


def _unpack(archive: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        with zipfile.ZipFile(archive) as bundle:
            bundle.extractall(staging)
        for path in staging.iterdir():
            path.chmod(0o755)
        (staging / COMPLETE).touch()
        try:
            staging.rename(target)
        except OSError:
            if not (target / COMPLETE).exists():  # not another process that won the race
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
