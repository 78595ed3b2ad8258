"""Executables in the launcher's layout, written here from the format's description (not with the
bundler's code), so that the launcher's tests check the format itself:

    [launcher][zeros][weights, may be absent][zeros][runtime pack][manifest JSON][footer]

The footer is the file's last 156 bytes (struct FOOTER, crc32 of the 152 before it); the runtime pack is
a header and entries (PACK_HEADER, ENTRY_HEADER + path + ENTRY_FIELDS + data), its first entry the
program to exec, "llmpack-runtime"."""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

FOOTER = struct.Struct("<8sIIQQ32sQ32sQQ32sI")
FOOTER_FIELDS = ("magic", "version", "flags", "gguf_offset", "gguf_length", "gguf_sha256", "manifest_length",
                 "manifest_sha256", "runtime_offset", "runtime_length", "runtime_sha256", "crc32")
FOOTER_MAGIC = b"LLMPACK\0"
FOOTER_VERSION = 2
PACK_HEADER = struct.Struct("<8sII")
PACK_MAGIC = b"LLMPACKR"
PACK_VERSION = 1
ENTRY_HEADER = struct.Struct("<H")  # the path's length; the path follows
ENTRY_FIELDS = struct.Struct("<BBIQQ32s")  # kind, compression, mode, size, stored size, sha256
REGULAR, SYMLINK = 0, 1
PROGRAM = "llmpack-runtime"
ALIGN = 4096


@dataclass(frozen=True)
class Entry:
    path: str
    data: bytes  # a symbolic link's target, for a link
    mode: int = 0o644
    kind: int = REGULAR
    compress: bool = False


def entry_bytes(entry: Entry) -> bytes:
    path = entry.path.encode()
    stored = zlib.compress(entry.data) if entry.compress else entry.data
    return (ENTRY_HEADER.pack(len(path)) + path
            + ENTRY_FIELDS.pack(entry.kind, int(entry.compress), entry.mode, len(entry.data), len(stored),
                                hashlib.sha256(entry.data).digest())
            + stored)


def pack(entries: list[Entry]) -> bytes:
    return PACK_HEADER.pack(PACK_MAGIC, PACK_VERSION, len(entries)) + b"".join(entry_bytes(e) for e in entries)


def cache_key(runtime_pack: bytes) -> str:
    """The cache entry's name: the first 16 hex digits of the pack's sha256."""
    return hashlib.sha256(runtime_pack).hexdigest()[:16]


def footer(*, gguf_offset: int, gguf: bytes, manifest: bytes, runtime_offset: int, runtime_pack: bytes,
           version: int = FOOTER_VERSION) -> bytes:
    body = FOOTER.pack(FOOTER_MAGIC, version, 0, gguf_offset, len(gguf), hashlib.sha256(gguf).digest(),
                       len(manifest), hashlib.sha256(manifest).digest(), runtime_offset, len(runtime_pack),
                       hashlib.sha256(runtime_pack).digest(), 0)
    return body[:-4] + struct.pack("<I", zlib.crc32(body[:-4]))


def _padding(length: int) -> bytes:
    return b"\0" * (-length % ALIGN)


def executable_bytes(launcher: bytes, runtime_pack: bytes, *, gguf: bytes = b"", manifest: bytes = b"{}") -> bytes:
    head = launcher + _padding(len(launcher))
    gguf_offset = len(head) if gguf else 0
    head += gguf + _padding(len(gguf))
    runtime_offset = len(head)
    return (head + runtime_pack + manifest
            + footer(gguf_offset=gguf_offset, gguf=gguf, manifest=manifest, runtime_offset=runtime_offset,
                     runtime_pack=runtime_pack))


def write_executable(output: Path, launcher: Path, runtime_pack: bytes, **layout: bytes) -> Path:
    output.write_bytes(executable_bytes(launcher.read_bytes(), runtime_pack, **layout))
    output.chmod(0o755)
    return output


def footer_fields(executable: bytes) -> dict[str, object]:
    return dict(zip(FOOTER_FIELDS, FOOTER.unpack(executable[-FOOTER.size:]), strict=True))


def with_footer(executable: bytes, **changes: object) -> bytes:
    """The same file with footer fields changed and its crc32 recomputed (unless crc32 is one of them)."""
    fields = {**footer_fields(executable), **changes}
    body = FOOTER.pack(*fields.values())
    if "crc32" not in changes:
        body = body[:-4] + struct.pack("<I", zlib.crc32(body[:-4]))
    return executable[:-FOOTER.size] + body
