"""Writes the runtime pack: PyInstaller's one-folder runtime as one stream the native launcher
(runtime/launcher/launcher.c) unpacks once into the per-user cache. The runtime reads it back in
runtime/bundle/runtime_pack.py (--verify); tests check the two halves against each other.

    header: magic "LLMPACKR" | pack version u32 | entry count u32
    entry:  path length u16 | path (UTF-8, relative, '/') | kind u8 (0 file, 1 symlink) |
            compression u8 (0 stored, 1 zlib) | mode u32 | size u64 | stored size u64 |
            sha256 of the content (32 bytes) | stored bytes

The first entry is the program the launcher execs. Entries are sorted and carry no timestamps or
owners: the same folder gives the same bytes, so the same runtime lands in the same cache entry.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from . import messages
from .errors import BuildError

MAGIC = b"LLMPACKR"
VERSION = 1
HEADER = struct.Struct("<8sII")
ENTRY = struct.Struct("<BBIQQ32s")  # after the path
KIND_FILE, KIND_SYMLINK = 0, 1
STORED, ZLIB = 0, 1
# Already-compressed content gains nothing from deflate but costs time at the one unpack.
_INCOMPRESSIBLE = (".zip", ".gz", ".xz", ".zst", ".png", ".jpg")


def _members(folder: Path, entry_point: str) -> list[PurePosixPath]:
    members = sorted(PurePosixPath(p.relative_to(folder).as_posix()) for p in folder.rglob("*")
                     if p.is_symlink() or p.is_file())
    first = PurePosixPath(entry_point)
    if first not in members:
        raise BuildError(messages.RUNTIME_ENTRY_MISSING.format(path=folder / entry_point))
    return [first] + [m for m in members if m != first]


def _symlink_target(folder: Path, member: PurePosixPath) -> bytes:
    target = os.readlink(folder / member)
    resolved = (folder / member).parent.joinpath(target).resolve()
    if os.path.isabs(target) or not resolved.is_relative_to(folder.resolve()):
        raise BuildError(messages.RUNTIME_SYMLINK_ESCAPES.format(path=folder / member, target=target))
    return target.encode()


def write_pack(folder: Path, out: BinaryIO, entry_point: str) -> tuple[int, str]:
    """Writes the pack of `folder` to `out`; returns its length and sha256."""
    members = _members(folder, entry_point)
    digest = hashlib.sha256()
    written = 0

    def emit(data: bytes) -> None:
        nonlocal written
        out.write(data)
        digest.update(data)
        written += len(data)

    emit(HEADER.pack(MAGIC, VERSION, len(members)))
    for member in members:
        path = folder / member
        if path.is_symlink():
            content, kind, mode = _symlink_target(folder, member), KIND_SYMLINK, 0o777
        else:
            content, kind, mode = path.read_bytes(), KIND_FILE, path.stat().st_mode & 0o777
        stored, compression = content, STORED
        if kind == KIND_FILE and not member.name.endswith(_INCOMPRESSIBLE):
            packed = zlib.compress(content, 6)
            if len(packed) < len(content):
                stored, compression = packed, ZLIB
        name = str(member).encode()
        emit(struct.pack("<H", len(name)) + name)
        emit(ENTRY.pack(kind, compression, mode, len(content), len(stored), hashlib.sha256(content).digest()))
        emit(stored)
    return written, digest.hexdigest()
