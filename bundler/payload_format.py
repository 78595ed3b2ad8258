"""The llmpack payload format, build side: writes the manifest and footer, and reads them back for
`inspect`, `unpack` and `repack`.

This is the bundler's half of the contract with `runtime/bundle/payload_format.py` and with the native launcher
(`runtime/launcher/launcher.c`); none of them import each other, and the two Python halves are tested
against the same vectors (tests/vectors/). An executable is laid out as

    [launcher][zeros to 64 KiB][GGUF][zeros to 8][runtime pack][manifest JSON][footer]

The launcher, a small native program, reads the footer at every start (a few hundred bytes), unpacks the
runtime pack (runtime_pack.py) once into a per-user cache named by its sha256, and exec()s it. The footer,
at the very end, is a fixed-size little-endian

    magic "LLMPACK\\0" | format version u32 | flags u32 | GGUF offset u64 | GGUF length u64 |
    GGUF sha256 (32 bytes) | manifest length u64 | manifest sha256 (32 bytes) |
    runtime offset u64 | runtime length u64 | runtime sha256 (32 bytes) | crc32 of all before u32

Version 1 (PyInstaller's one-file archive in place of the launcher and pack, without the runtime fields)
is still read, so `inspect` and `unpack` work on executables built before.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import messages
from .errors import BuildError

MAGIC = b"LLMPACK\x00"
# The weights are in a file beside the executable (named by the manifest's "sidecar"), not inside it.
FLAG_SIDECAR = 1
# A runtime without weights (what `llmpack runtime` writes): the launcher runs it, the runtime loads no model.
FLAG_NO_WEIGHTS = 2
FORMAT_VERSION = 2
FOOTER = struct.Struct("<8sIIQQ32sQ32sQQ32sI")
FOOTER_V1 = struct.Struct("<8sIIQQ32sQ32sI")
MAX_MANIFEST_BYTES = 1 << 20
# 64 KiB keeps the GGUF's data section aligned for mmap on every platform (Apple's 16 KiB pages
# included) and for llama.cpp's 32-byte tensor alignment.
GGUF_ALIGNMENT = 64 * 1024


def encode_manifest(manifest: dict[str, Any]) -> bytes:
    """Canonical JSON: same manifest, same bytes (reproducible builds)."""
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@dataclass(frozen=True)
class RuntimeRange:
    """Where the runtime pack lies in the file, and its sha256 (the launcher's cache key)."""

    offset: int
    length: int
    sha256: str


def encode_trailer(manifest: dict[str, Any], gguf_offset: int, gguf_length: int, gguf_sha256: str,
                   runtime: RuntimeRange, flags: int = 0) -> bytes:
    """The bytes that end the executable: manifest JSON, then the footer."""
    manifest_bytes = encode_manifest(manifest)
    if len(manifest_bytes) > MAX_MANIFEST_BYTES:
        raise BuildError(messages.MANIFEST_TOO_LARGE)
    body = FOOTER.pack(MAGIC, FORMAT_VERSION, flags, gguf_offset, gguf_length, bytes.fromhex(gguf_sha256),
                       len(manifest_bytes), hashlib.sha256(manifest_bytes).digest(),
                       runtime.offset, runtime.length, bytes.fromhex(runtime.sha256), 0)[:-4]
    return manifest_bytes + body + struct.pack("<I", zlib.crc32(body))


@dataclass(frozen=True)
class BundleInfo:
    path: str
    size: int
    format_version: int
    flags: int
    gguf_offset: int
    gguf_length: int
    gguf_sha256: str
    manifest: dict[str, Any]
    trailer_start: int  # where the manifest begins
    runtime: RuntimeRange | None  # None in a version 1 file (PyInstaller's one-file runtime)


def read_bundle(path: str) -> BundleInfo:
    """Reads and checks the footer, manifest and GGUF header (cheap: a few KB whatever the size)."""
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise BuildError(messages.INPUT_UNREADABLE.format(path=path, reason=exc.strerror or str(exc))) from None
    with f:
        size = f.seek(0, os.SEEK_END)
        if size < FOOTER_V1.size:
            raise BuildError(messages.NOT_A_BUNDLE.format(path=path))
        f.seek(max(0, size - FOOTER.size))
        tail = f.read(FOOTER.size)

        def damaged(reason: str) -> BuildError:
            return BuildError(messages.BUNDLE_DAMAGED.format(path=path, reason=reason))

        runtime = None
        footer = tail[-FOOTER.size:]
        # A version 1 footer is shorter: its magic is not where a version 2 footer's is (JSON has no NUL).
        if len(footer) == FOOTER.size and footer.startswith(MAGIC):
            (_magic, version, flags, gguf_offset, gguf_length, gguf_digest, manifest_length, manifest_digest,
             runtime_offset, runtime_length, runtime_digest, crc) = FOOTER.unpack(footer)
            runtime = RuntimeRange(runtime_offset, runtime_length, runtime_digest.hex())
        else:
            footer = tail[-FOOTER_V1.size:]
            if not footer.startswith(MAGIC):
                raise BuildError(messages.NOT_A_BUNDLE.format(path=path))
            (_magic, version, flags, gguf_offset, gguf_length, gguf_digest, manifest_length,
             manifest_digest, crc) = FOOTER_V1.unpack(footer)
        if zlib.crc32(footer[:-4]) != crc:
            raise damaged("the payload footer's checksum does not match")
        if version not in (1, FORMAT_VERSION):
            raise damaged(f"payload format {version} is not supported (this llmpack reads 1 and {FORMAT_VERSION})")
        manifest_offset = size - len(footer) - manifest_length
        if manifest_length > MAX_MANIFEST_BYTES or manifest_offset < 0:
            raise damaged("the manifest length is out of range")
        if runtime is not None and runtime.offset + runtime.length > manifest_offset:
            raise damaged("the runtime lies outside the file (truncated?)")
        sidecar = bool(flags & FLAG_SIDECAR)
        no_weights = bool(flags & FLAG_NO_WEIGHTS)
        if not (sidecar or no_weights) and (gguf_offset % 32 or gguf_offset + gguf_length > manifest_offset):
            raise damaged("the weights lie outside the file (truncated?)")
        f.seek(manifest_offset)
        manifest_bytes = f.read(manifest_length)
        if hashlib.sha256(manifest_bytes).digest() != manifest_digest:
            raise damaged("the manifest's sha256 does not match")
        if not (sidecar or no_weights):
            f.seek(gguf_offset)
            if f.read(4) != b"GGUF":
                raise damaged("the embedded weights do not start with a GGUF header")
    info = BundleInfo(path, size, version, flags, gguf_offset, gguf_length, gguf_digest.hex(),
                      json.loads(manifest_bytes), manifest_offset, runtime)
    if sidecar and not weights_path(info).is_file():
        raise damaged(f"its weights file {weights_path(info)} is missing")
    return info


def weights_path(info: BundleInfo) -> Path:
    """The file holding the GGUF: the executable itself, or its sidecar."""
    if info.flags & FLAG_SIDECAR:
        return Path(info.path).resolve().parent / str(info.manifest.get("sidecar", ""))
    return Path(info.path)
