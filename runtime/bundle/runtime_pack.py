"""Reads the runtime pack (bundler/runtime_pack.py describes it) for --verify: the pack inside this
executable must match its recorded sha256, and the cache folder the launcher unpacked it into must hold
what the pack says. The launcher checks neither at every start (it would cost a read of the whole
runtime); it checks the pack's sha256 when it unpacks."""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass
from typing import BinaryIO, Iterator

MAGIC = b"LLMPACKR"
HEADER = struct.Struct("<8sII")
ENTRY = struct.Struct("<BBIQQ32s")
KIND_FILE = 0
BLOCK = 8 << 20


@dataclass(frozen=True)
class PackEntry:
    path: str
    kind: int
    size: int
    sha256: bytes


class PackDamaged(Exception):
    pass


def entries(f: BinaryIO, offset: int, length: int) -> Iterator[PackEntry]:
    """The pack's entries, reading only their headers."""
    f.seek(offset)
    magic, _version, count = HEADER.unpack(f.read(HEADER.size))
    if magic != MAGIC:
        raise PackDamaged("the runtime pack has no header")
    position = offset + HEADER.size
    for _ in range(count):
        f.seek(position)
        (name_length,) = struct.unpack("<H", f.read(2))
        name = f.read(name_length).decode("utf-8", "replace")
        kind, _compression, _mode, size, stored, digest = ENTRY.unpack(f.read(ENTRY.size))
        position += 2 + name_length + ENTRY.size + stored
        if position > offset + length:
            raise PackDamaged("an entry of the runtime pack runs past its end")
        yield PackEntry(name, kind, size, digest)


def _sha256_of(f: BinaryIO, length: int) -> bytes:
    digest = hashlib.sha256()
    while length > 0:
        block = f.read(min(BLOCK, length))
        if not block:
            break
        digest.update(block)
        length -= len(block)
    return digest.digest()


def damage_in_pack(executable: str, offset: int, length: int, sha256: str) -> str | None:
    """Why the pack inside the executable is damaged, or None when its sha256 matches."""
    with open(executable, "rb") as f:
        f.seek(offset)
        if _sha256_of(f, length).hex() != sha256:
            return "the runtime's bytes do not match their sha256"
    return None


def damage_in_folder(executable: str, offset: int, length: int, folder: str) -> str | None:
    """Why the unpacked runtime in `folder` differs from the pack, or None when every file matches."""
    with open(executable, "rb") as f:
        listed = list(entries(f, offset, length))
    for entry in listed:
        if entry.kind != KIND_FILE:
            continue
        path = os.path.join(folder, entry.path)
        try:
            with open(path, "rb") as unpacked:
                if os.fstat(unpacked.fileno()).st_size != entry.size or _sha256_of(unpacked, entry.size) != entry.sha256:
                    return f"{path} differs from the runtime it was unpacked from"
        except OSError as exc:
            return f"{path} cannot be read ({exc.strerror})"
    return None
