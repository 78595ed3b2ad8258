"""A byte range of an executable (the weights, the projector, the draft model) hashed, and copied out on
the way, with progress: what `inspect --verify` and `unpack` do to each part the payload carries."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO

from .progress import ByteProgress

CHUNK = 16 << 20


def hash_range(path: Path, offset: int, length: int, label: str, out: BinaryIO | None = None) -> str:
    """sha256 of `length` bytes at `offset` of `path`, written to `out` too if given; "" when the file
    ends first (a truncated executable), which matches no recorded hash."""
    digest, done = hashlib.sha256(), 0
    progress = ByteProgress(label)
    with open(path, "rb") as f:
        f.seek(offset)
        while done < length:
            block = f.read(min(CHUNK, length - done))
            if not block:
                break
            digest.update(block)
            if out is not None:
                out.write(block)
            done += len(block)
            progress.update(done, length)
    progress.done()
    return digest.hexdigest() if done == length else ""
