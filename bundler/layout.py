"""Lays out the executable: the native launcher, the GGUF, the runtime pack, and our trailer (see
payload_format.py for the format and why in that order).

The weights come right after the launcher, aligned to 64 KiB so llama.cpp maps them in place; the runtime
pack follows them. The footer records where both are, so nothing is found by scanning: the launcher reads
the footer's few hundred bytes at every start, and re-laying an executable out with other weights or
another runtime (`llmpack repack`) is only slicing."""

from __future__ import annotations

from dataclasses import dataclass

from . import messages
from .errors import BuildError
from .payload_format import FLAG_NO_WEIGHTS, FLAG_SIDECAR, BundleInfo, RuntimeRange, read_bundle


@dataclass(frozen=True)
class RuntimeImage:
    """A runtime for one target: the launcher (with the padding that followed it) and the pack."""

    launcher: bytes
    pack: bytes
    pack_sha256: str


def runtime_image(info: BundleInfo) -> RuntimeImage:
    """The runtime inside an executable or a bare runtime file, as read_bundle described it."""
    if info.runtime is None:
        raise BuildError(messages.BUNDLE_TOO_OLD.format(path=info.path))
    embedded = not info.flags & (FLAG_SIDECAR | FLAG_NO_WEIGHTS)
    head_end = info.gguf_offset if embedded else info.runtime.offset
    with open(info.path, "rb") as f:
        launcher = f.read(head_end)
        f.seek(info.runtime.offset)
        pack = f.read(info.runtime.length)
    if len(pack) != info.runtime.length:
        raise BuildError(messages.BUNDLE_DAMAGED.format(path=info.path, reason="the runtime lies outside the file"))
    return RuntimeImage(launcher, pack, info.runtime.sha256)


def read_runtime_file(path: str) -> RuntimeImage:
    return runtime_image(read_bundle(path))


def _align(value: int, alignment: int) -> int:
    return -(-value // alignment) * alignment


@dataclass(frozen=True)
class Layout:
    head: bytes  # written first, then zeros up to gguf_offset
    gguf_offset: int
    after_gguf: bytes  # padding and the runtime pack, written right after the GGUF (and the projector)
    runtime: RuntimeRange
    projector_offset: int = 0  # where a projector GGUF goes after the weights (zeros up to it), if one does


def lay_out(image: RuntimeImage, gguf_length: int, alignment: int, projector_length: int = 0) -> Layout:
    """With a projector (images and audio), it follows the weights at the same alignment:
    [launcher][zeros][GGUF][zeros][projector GGUF][zeros to 8][runtime pack]."""
    gguf_offset = _align(len(image.launcher), alignment)
    projector_offset = _align(gguf_offset + gguf_length, alignment) if projector_length else 0
    end = projector_offset + projector_length if projector_length else gguf_offset + gguf_length
    pack_offset = _align(end, 8)
    padding = b"\0" * (pack_offset - end)
    runtime = RuntimeRange(pack_offset, len(image.pack), image.pack_sha256)
    return Layout(image.launcher, gguf_offset, padding + image.pack, runtime, projector_offset)
