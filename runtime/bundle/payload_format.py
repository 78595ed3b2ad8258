"""Reads the llmpack payload: the weights and manifest that `llmpack build` put inside this executable.

This is the runtime's half of the contract with `bundler/payload_format.py` (which describes the layout
and the footer); the two never import each other and are tested against the same vectors (tests/vectors/).
The native launcher at the head of the file has already checked the footer's checksum and found this
runtime through it; it names the executable in LLMPACK_BUNDLE. The checks here are the cheap ones made at
every start (they read a few KB, whatever the weights' size); `verify_weights` and `verify_runtime`
re-hash and are only run on request (--verify).
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

from ..errors import CorruptBundle

MAGIC = b"LLMPACK\x00"
FLAG_SIDECAR = 1
FLAG_NO_WEIGHTS = 2
FORMAT_VERSION = 2
FOOTER = struct.Struct("<8sIIQQ32sQ32sQQ32sI")
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
    runtime: tuple[int, int, str] = (0, 0, "")  # the runtime pack's offset, length and sha256 in `executable`


def embedded_payload() -> Payload | None:
    """The payload of the executable the launcher started (LLMPACK_BUNDLE), or None when running
    unbundled (`llmpack run`) or as a bare runtime without weights.
    Here rather than beside the engine: --help and --version read it without loading llama.cpp."""
    path = os.environ.get(BUNDLE_VARIABLE)  # set by the launcher, or by hand to run another executable's payload
    if not path:
        return None
    payload = read_payload(path)
    return None if payload.gguf_length == 0 and not payload.manifest else payload


# Set by the launcher (runtime/launcher/launcher.c) before it execs the runtime.
BUNDLE_VARIABLE = "LLMPACK_BUNDLE"
ARGV0_VARIABLE = "LLMPACK_ARGV0"


def program_name() -> str:
    """The name the user typed to start us: the launcher execs the runtime under its cache path."""
    if getattr(sys, "frozen", False):
        return os.path.basename(os.environ.get(ARGV0_VARIABLE) or sys.argv[0])
    return "llmpack run"


def read_payload(path: str) -> Payload:
    """Parses and checks the footer, the manifest and the GGUF header. Raises CorruptBundle."""
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        if size < FOOTER.size:
            raise CorruptBundle(path, "too small to hold a payload (truncated?)")
        f.seek(size - FOOTER.size)
        footer = f.read(FOOTER.size)
        (magic, version, flags, gguf_offset, gguf_length, gguf_digest, manifest_length,
         manifest_digest, runtime_offset, runtime_length, runtime_digest, crc) = FOOTER.unpack(footer)
        if magic != MAGIC:
            raise CorruptBundle(path, "no payload footer at the end of the file (truncated?)")
        if zlib.crc32(footer[:-4]) != crc:
            raise CorruptBundle(path, "the payload footer is damaged (checksum mismatch)")
        if version != FORMAT_VERSION:
            raise CorruptBundle(path, f"payload format {version} is not supported (this runtime reads {FORMAT_VERSION})")
        manifest_offset = size - FOOTER.size - manifest_length
        if manifest_length > MAX_MANIFEST_BYTES or manifest_offset < 0:
            raise CorruptBundle(path, "the manifest length is out of range")
        if runtime_offset + runtime_length > manifest_offset:
            raise CorruptBundle(path, "the runtime lies outside the file (truncated?)")
        runtime = (runtime_offset, runtime_length, runtime_digest.hex())
        sidecar = bool(flags & FLAG_SIDECAR)
        if flags & FLAG_NO_WEIGHTS:
            return Payload(path, 0, 0, "", {}, path, runtime)
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
            return Payload(path, gguf_offset, gguf_length, gguf_digest.hex(), manifest, path, runtime)
    weights = os.path.join(os.path.dirname(os.path.abspath(path)), str(manifest.get("sidecar", "")))
    try:
        with open(weights, "rb") as f:
            if f.seek(0, os.SEEK_END) != gguf_length:
                raise CorruptBundle(path, f"its weights file {weights} has the wrong size")
            f.seek(0)
            _check_gguf_header(path, f)
    except OSError as exc:
        raise CorruptBundle(path, f"its weights file {weights} cannot be read ({exc.strerror})") from None
    return Payload(weights, 0, gguf_length, gguf_digest.hex(), manifest, path, runtime)


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
