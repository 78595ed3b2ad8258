"""Lays out the executable: the runtime's bootloader, the GGUF, the runtime's PyInstaller archive, and
our trailer (see payload_format.py for why in that order).

On Linux, PyInstaller stores its archive in an ELF section (`pydata`) followed by the section string
table and the section headers. We move those after the GGUF, fix their offsets, and describe the GGUF
as an `llm` section, so the result is still a well-formed ELF file (readelf, strip and debuggers keep
working). For other formats (Windows PE, macOS) the weights are inserted before the archive and the
archive is found through its cookie, as the bootloader itself does.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from . import messages
from .errors import BuildError
from .payload_format import TAIL_MARKER

# PyInstaller's archive cookie: magic, archive length, TOC offset, TOC length, Python version, libpython name.
COOKIE_MAGIC = b"MEI\014\013\012\013\016"
COOKIE = struct.Struct("!8sIIII64s")


@dataclass(frozen=True)
class RuntimeImage:
    """A PyInstaller onefile runtime split where the weights go in."""

    head: bytes  # bootloader (and ELF headers/sections before the archive)
    archive: bytes  # PyInstaller archive, ending with its cookie
    tail: bytes  # whatever followed the cookie (ELF section string table and headers)
    elf: "_ElfTail | None"


def _find_archive(data, path: str, search_from: int = 0) -> tuple[int, int]:
    """(archive start, cookie end) of the PyInstaller archive, found as its bootloader finds it."""
    cookie_at = data.rfind(COOKIE_MAGIC, search_from)
    if cookie_at < 0:
        raise BuildError(messages.RUNTIME_NOT_PYINSTALLER.format(path=path))
    _magic, archive_length, *_ = COOKIE.unpack_from(data, cookie_at)
    cookie_end = cookie_at + COOKIE.size
    if archive_length > cookie_end - search_from:
        raise BuildError(messages.RUNTIME_NOT_PYINSTALLER.format(path=path))
    return cookie_end - archive_length, cookie_end


def split_runtime(data: bytes, path: str) -> RuntimeImage:
    """A bare runtime (as PyInstaller wrote it) split where the weights go in."""
    archive_start, cookie_end = _find_archive(data, path)
    elf = _ElfTail.parse(data, archive_start, cookie_end)
    return RuntimeImage(data[:archive_start], data[archive_start:cookie_end], data[cookie_end:], elf)


def runtime_of_bundle(data, path: str, weights: tuple[int, int] | None, trailer_start: int) -> RuntimeImage:
    """The runtime inside an executable we built (`data` may be an mmap: only the runtime is copied),
    as split_runtime would have returned it, so it can be laid out again with other weights.
    `weights` is the (offset, length) of the embedded GGUF, None when it is a sidecar."""
    gguf_offset, gguf_length = weights or (0, 0)
    archive_start, cookie_end = _find_archive(data, path, gguf_offset + gguf_length)
    head_end = gguf_offset if weights else archive_start
    tail = bytes(data[cookie_end:trailer_start])
    if not tail.startswith(TAIL_MARKER):
        raise BuildError(messages.BUNDLE_DAMAGED.format(path=path, reason="no tail marker after the archive"))
    elf = _ElfTail.parse(data, archive_start, cookie_end)
    if elf is not None and elf.shstrtab.endswith(b"\0llm\0"):  # the section we added, always last
        elf = _ElfTail(elf.sections[:-1], elf.shstrtab[:-4], elf.shstrndx, elf.archive_section)
    return RuntimeImage(bytes(data[:head_end]), bytes(data[archive_start:cookie_end]), tail[len(TAIL_MARKER):], elf)


def _align(value: int, alignment: int) -> int:
    return -(-value // alignment) * alignment


@dataclass(frozen=True)
class Layout:
    head: bytes  # written first, then zeros up to gguf_offset
    gguf_offset: int
    after_gguf: bytes  # padding, the archive and the tail, written right after the GGUF


def lay_out(image: RuntimeImage, gguf_length: int, alignment: int) -> Layout:
    gguf_offset = _align(len(image.head), alignment)
    archive_start = _align(gguf_offset + gguf_length, 8)
    padding = b"\0" * (archive_start - gguf_offset - gguf_length)
    archive = image.archive + TAIL_MARKER
    if image.elf is None:
        return Layout(image.head, gguf_offset, padding + archive + image.tail)
    head, tail = image.elf.relocate(image.head, archive_start, len(archive), gguf_offset, gguf_length)
    return Layout(head, gguf_offset, padding + archive + tail)


# ELF64 little-endian: header fields we touch, and section headers.
_EHDR_SHOFF = 0x28
_EHDR_SHNUM = 0x3C
_SHDR = struct.Struct("<IIQQQQIIQQ")  # name type flags addr offset size link info addralign entsize
_SHT_PROGBITS, _SHT_NOBITS = 1, 8
_OFFSET, _SIZE = 4, 5


@dataclass(frozen=True)
class _ElfTail:
    """An ELF64 runtime whose archive section is followed only by .shstrtab and the section headers."""

    sections: tuple[tuple[int, ...], ...]
    shstrtab: bytes
    shstrndx: int
    archive_section: int

    @classmethod
    def parse(cls, data: bytes, archive_start: int, cookie_end: int) -> "_ElfTail | None":
        if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
            return None  # not ELF64 little-endian: use the generic layout
        shoff = struct.unpack_from("<Q", data, _EHDR_SHOFF)[0]
        shnum, shstrndx = struct.unpack_from("<HH", data, _EHDR_SHNUM)
        if shoff < cookie_end or shnum == 0 or shstrndx >= shnum:
            return None
        sections = tuple(_SHDR.unpack_from(data, shoff + i * _SHDR.size) for i in range(shnum))
        archive_section = next((i for i, s in enumerate(sections) if s[_OFFSET] == archive_start), None)
        after_archive = {i for i, s in enumerate(sections) if s[_OFFSET] >= archive_start and s[1] != _SHT_NOBITS}
        strtab = sections[shstrndx]
        if archive_section is None or after_archive != {archive_section, shstrndx} or strtab[_OFFSET] < cookie_end:
            return None
        return cls(sections, data[strtab[_OFFSET]:strtab[_OFFSET] + strtab[_SIZE]], shstrndx, archive_section)

    def relocate(self, head: bytes, archive_start: int, archive_length: int, gguf_offset: int,
                 gguf_length: int) -> tuple[bytes, bytes]:
        """The patched ELF header, and the tail that follows the archive: the section string table
        and section headers for the new layout, with an `llm` section describing the GGUF."""
        shstrtab = self.shstrtab + b"llm\0"
        strtab_offset = archive_start + archive_length
        headers_at = _align(strtab_offset + len(shstrtab), 8)
        sections = [list(s) for s in self.sections]
        sections[self.archive_section][_OFFSET] = archive_start  # its size excludes the marker
        sections[self.shstrndx][_OFFSET] = strtab_offset
        sections[self.shstrndx][_SIZE] = len(shstrtab)
        sections.append([len(self.shstrtab), _SHT_PROGBITS, 0, 0, gguf_offset, gguf_length, 0, 0, 64 * 1024, 0])
        header = bytearray(head[:64])
        struct.pack_into("<Q", header, _EHDR_SHOFF, headers_at)
        struct.pack_into("<H", header, _EHDR_SHNUM, len(sections))
        table = b"".join(_SHDR.pack(*s) for s in sections)
        padding = b"\0" * (headers_at - strtab_offset - len(shstrtab))
        return bytes(header) + head[64:], shstrtab + padding + table
