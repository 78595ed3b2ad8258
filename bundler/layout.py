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
    after_gguf: bytes  # padding and the runtime pack, written right after the GGUF (and the GGUFs after it)
    runtime: RuntimeRange
    extra_offsets: tuple[int, ...] = ()  # where each GGUF carried after the weights goes (zeros up to it)


def lay_out(image: RuntimeImage, gguf_length: int, alignment: int, *extra_lengths: int) -> Layout:
    """GGUFs carried after the weights (a projector for images and audio, a draft model) follow them in
    turn, at the same alignment: [launcher][zeros][GGUF]([zeros][GGUF]...)[zeros to 8][runtime pack]."""
    gguf_offset = _align(len(image.launcher), alignment)
    end, offsets = gguf_offset + gguf_length, []
    for length in extra_lengths:
        offsets.append(_align(end, alignment))
        end = offsets[-1] + length
    pack_offset = _align(end, 8)
    padding = b"\0" * (pack_offset - end)
    runtime = RuntimeRange(pack_offset, len(image.pack), image.pack_sha256)
    return Layout(image.launcher, gguf_offset, padding + image.pack, runtime, tuple(offsets))
