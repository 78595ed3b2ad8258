"""Reads the llmpack payload: the weights and manifest that `llmpack build` put inside this executable.

This is the runtime's half of the contract with `bundler/payload_format.py`; the two never import each
other and are tested against the same vectors (tests/vectors/). The file is laid out as

    [bootloader][padding to 64 KiB][GGUF][PyInstaller archive + cookie][tail marker]...[manifest JSON][footer]

and the footer, a fixed-size little-endian struct at the very end, is

    magic "LLMPACK\\0" | format version u32 | flags u32 | GGUF offset u64 | GGUF length u64 |
    GGUF sha256 (32 bytes) | manifest length u64 | manifest sha256 (32 bytes) | crc32 of all before u32

Flag SIDECAR (bit 0): the weights are not inside but in a file beside the executable, named by the
manifest's "sidecar" (Windows and macOS cannot run executables over 4 GB); offset is then 0 and length
is the sidecar's size. The tail marker, written right after PyInstaller's cookie, tells a truncated executable (marker, no
footer) from a runtime that never had a payload (neither). The checks here are the cheap ones made at every start (they read a few KB, whatever the weights' size);
`verify_weights` re-hashes the GGUF and is only run on request.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import sys
import zlib
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable

from .errors import CorruptBundle

MAGIC = b"LLMPACK\x00"
FLAG_SIDECAR = 1
TAIL_MARKER = b"LLMPACK-TAIL\x00\x00\x00\x00"
# How far from the end the tail marker can be: the manifest plus the ELF section table, with room.
TAIL_SCAN_BYTES = (1 << 20) + (64 << 10)
FORMAT_VERSION = 1
FOOTER = struct.Struct("<8sIIQQ32sQ32sI")
MAX_MANIFEST_BYTES = 1 << 20
GGUF_MAGIC = b"GGUF"
SUPPORTED_GGUF_VERSIONS = (2, 3)
# llama.cpp maps tensors in place only when the data section is aligned to the CPU tensor alignment.
REQUIRED_GGUF_ALIGNMENT = 32


@dataclass(frozen=True)
class Payload:
    """Where the embedded weights are, and what the builder recorded about them."""

    path: str  # the file holding the GGUF: this executable, or its sidecar
    gguf_offset: int
    gguf_length: int
    gguf_sha256: str
    manifest: dict[str, Any]
    executable: str = ""


def embedded_payload() -> Payload | None:
    """The payload of the running executable, or None when running unbundled (`llmpack run`).
    Here rather than beside the engine: --help and --version read it without loading llama.cpp."""
    path = os.environ.get("LLMPACK_BUNDLE") or (sys.executable if getattr(sys, "frozen", False) else None)
    if path is None or not has_payload(path):
        return None
    return read_payload(path)


def has_payload(path: str) -> bool:
    """True when the file carries a payload, intact or damaged (then read_payload says how)."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - TAIL_SCAN_BYTES))
            tail = f.read()
    except OSError:
        return False
    return tail[-FOOTER.size:].startswith(MAGIC) or TAIL_MARKER in tail


def read_payload(path: str) -> Payload:
    """Parses and checks the footer, the manifest and the GGUF header. Raises CorruptBundle."""
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        if size < FOOTER.size:
            raise CorruptBundle(path, "too small to hold a payload (truncated?)")
        f.seek(size - FOOTER.size)
        footer = f.read(FOOTER.size)
        (magic, version, flags, gguf_offset, gguf_length, gguf_digest, manifest_length,
         manifest_digest, crc) = FOOTER.unpack(footer)
        if magic != MAGIC:
            raise CorruptBundle(path, "no payload footer at the end of the file (truncated?)")
        if zlib.crc32(footer[:-4]) != crc:
            raise CorruptBundle(path, "the payload footer is damaged (checksum mismatch)")
        if version != FORMAT_VERSION:
            raise CorruptBundle(path, f"payload format {version} is not supported (this runtime reads {FORMAT_VERSION})")
        manifest_offset = size - FOOTER.size - manifest_length
        if manifest_length > MAX_MANIFEST_BYTES or manifest_offset < 0:
            raise CorruptBundle(path, "the manifest length is out of range")
        sidecar = bool(flags & FLAG_SIDECAR)
        if not sidecar and (gguf_offset % REQUIRED_GGUF_ALIGNMENT or gguf_offset + gguf_length > manifest_offset):
            raise CorruptBundle(path, "the weights lie outside the file (truncated?)")
        f.seek(manifest_offset)
        manifest_bytes = f.read(manifest_length)
        if hashlib.sha256(manifest_bytes).digest() != manifest_digest:
            raise CorruptBundle(path, "the manifest is damaged (sha256 mismatch)")
        try:
            manifest = json.loads(manifest_bytes)
        except ValueError as exc:
            raise CorruptBundle(path, f"the manifest is not valid JSON ({exc})") from None
        if not sidecar:
            f.seek(gguf_offset)
            _check_gguf_header(path, f)
            return Payload(path, gguf_offset, gguf_length, gguf_digest.hex(), manifest, path)
    weights = os.path.join(os.path.dirname(os.path.abspath(path)), str(manifest.get("sidecar", "")))
    try:
        with open(weights, "rb") as f:
            if f.seek(0, os.SEEK_END) != gguf_length:
                raise CorruptBundle(path, f"its weights file {weights} has the wrong size")
            f.seek(0)
            _check_gguf_header(path, f)
    except OSError as exc:
        raise CorruptBundle(path, f"its weights file {weights} cannot be read ({exc.strerror})") from None
    return Payload(weights, 0, gguf_length, gguf_digest.hex(), manifest, path)


def _check_gguf_header(path: str, f: BinaryIO) -> None:
    header = f.read(8)
    if len(header) < 8 or header[:4] != GGUF_MAGIC:
        raise CorruptBundle(path, "the embedded weights do not start with a GGUF header")
    (gguf_version,) = struct.unpack("<I", header[4:])
    if gguf_version not in SUPPORTED_GGUF_VERSIONS:
        raise CorruptBundle(path, f"the embedded GGUF has unsupported version {gguf_version}")


def verify_weights(payload: Payload, progress: Callable[[int, int], None] | None = None) -> bool:
    """Re-hashes the embedded GGUF; True when it matches the sha256 recorded at build time."""
    digest = hashlib.sha256()
    remaining = payload.gguf_length
    with open(payload.path, "rb") as f:
        f.seek(payload.gguf_offset)
        while remaining:
            block = f.read(min(remaining, 8 << 20))
            if not block:
                break
            digest.update(block)
            remaining -= len(block)
            if progress:
                progress(payload.gguf_length - remaining, payload.gguf_length)
    return remaining == 0 and digest.hexdigest() == payload.gguf_sha256
