"""Writes an executable from a frozen runtime and GGUF weights, atomically: a temporary file in the
target directory, renamed into place only once complete, removed on any failure or Ctrl-C."""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable

from . import messages
from .errors import BuildError
from .layout import RuntimeImage, lay_out, read_runtime_file
from .payload_format import FLAG_NO_WEIGHTS, FLAG_SIDECAR, GGUF_ALIGNMENT, encode_trailer

CHUNK = 16 << 20
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Weights:
    """A GGUF's bytes: a whole file, or a range of one (the weights inside an existing executable)."""

    path: Path
    offset: int = 0
    length: int = -1

    @property
    def size(self) -> int:
        return self.length if self.length >= 0 else self.path.stat().st_size


@dataclass(frozen=True)
class BundleResult:
    path: Path
    size: int
    gguf_offset: int
    gguf_length: int
    gguf_sha256: str
    sidecar: Path | None = None


def sidecar_name(output: Path) -> str:
    return f"{output.stem}.weights.gguf"


def read_runtime(runtime: Path) -> RuntimeImage:
    if not runtime.is_file():
        raise BuildError(messages.RUNTIME_NOT_FOUND.format(path=runtime))
    return read_runtime_file(str(runtime))


def write_bare_runtime(image: RuntimeImage, output: Path) -> None:
    """A runtime without weights: what `llmpack runtime` caches and exports, and `llmpack build` reads."""
    layout = lay_out(image, 0, 8)
    with atomic_output(output, mode=0o755) as out:
        out.write(layout.head + b"\0" * (layout.gguf_offset - len(layout.head)) + layout.after_gguf)
        out.write(encode_trailer({}, 0, 0, hashlib.sha256().hexdigest(), layout.runtime, FLAG_NO_WEIGHTS))


def write_bundle(image: RuntimeImage, weights: Weights, output: Path, manifest: Callable[[str], dict[str, Any]],
                 progress: Progress | None = None, sidecar: bool = False,
                 projector: Projector | None = None, draft: Projector | None = None) -> BundleResult:
    """`manifest(sha256)` builds the manifest once the weights' hash is known (computed while copying).
    With `sidecar`, the weights go to a file beside the executable instead of inside it. A `projector`
    (images and audio) and a `draft` model follow the weights, each with its place and sha256 in the
    manifest ("mmproj", "draft")."""
    length = weights.size
    extras = {key: carried for key, carried in (("mmproj", projector), ("draft", draft)) if carried is not None}
    if extras and not sidecar:
        return _write_with_extras(image, weights, output, manifest, progress, extras)
    if sidecar and projector is not None:
        raise BuildError(messages.MMPROJ_WITH_SIDECAR)
    if sidecar and draft is not None:
        raise BuildError(messages.DRAFT_WITH_SIDECAR)
    if sidecar:
        beside = output.parent / sidecar_name(output)
        with atomic_output(beside) as out:
            digest = copy_and_hash(weights, out, progress)
        layout = lay_out(image, 0, 8)
        with atomic_output(output, mode=0o755) as out:
            out.write(layout.head + b"\0" * (layout.gguf_offset - len(layout.head)) + layout.after_gguf)
            out.write(encode_trailer({**manifest(digest), "sidecar": beside.name}, 0, length, digest, layout.runtime,
                                     FLAG_SIDECAR))
            size = out.tell()
        return BundleResult(output, size, 0, length, digest, beside)
    layout = lay_out(image, length, GGUF_ALIGNMENT)
    with atomic_output(output, mode=0o755) as out:
        out.write(layout.head)
        out.write(b"\0" * (layout.gguf_offset - len(layout.head)))
        digest = copy_and_hash(weights, out, progress)
        out.write(layout.after_gguf)
        out.write(encode_trailer(manifest(digest), layout.gguf_offset, length, digest, layout.runtime))
        size = out.tell()
    return BundleResult(output, size, layout.gguf_offset, length, digest)


@dataclass(frozen=True)
class Projector:
    """A GGUF carried after the weights (llama.cpp's mmproj, or a draft model), and what the manifest says
    of where it came from."""

    weights: Weights
    entry: dict[str, Any]  # file, source, ...: offset, length and sha256 are added when written


def _write_with_extras(image: RuntimeImage, weights: Weights, output: Path,
                       manifest: Callable[[str], dict[str, Any]], progress: Progress | None,
                       extras: dict[str, Projector]) -> BundleResult:
    length = weights.size
    layout = lay_out(image, length, GGUF_ALIGNMENT, *(carried.weights.size for carried in extras.values()))
    entries: dict[str, dict[str, Any]] = {}
    with atomic_output(output, mode=0o755) as out:
        out.write(layout.head)
        out.write(b"\0" * (layout.gguf_offset - len(layout.head)))
        digest = copy_and_hash(weights, out, progress)
        for (key, carried), offset in zip(extras.items(), layout.extra_offsets):
            out.write(b"\0" * (offset - out.tell()))
            entries[key] = {**carried.entry, "offset": offset, "length": carried.weights.size,
                            "sha256": copy_and_hash(carried.weights, out, None)}
        out.write(layout.after_gguf)
        out.write(encode_trailer({**manifest(digest), **entries}, layout.gguf_offset, length, digest, layout.runtime))
        size = out.tell()
    return BundleResult(output, size, layout.gguf_offset, length, digest)


def copy_and_hash(weights: Weights, out: BinaryIO, progress: Progress | None) -> str:
    """Copies the weights to `out` at its current position and returns their sha256. The kernel copies
    (copy_file_range: no trip through Python, a reflink where the filesystem can) while a second
    thread hashes the same bytes from the page cache: the two overlap, so a build costs about a `cp`."""
    length = weights.size
    hasher = _Hasher(weights, length)
    hasher.start()
    try:
        if not _kernel_copy(weights, out, length, progress):
            _buffered_copy(weights, out, length, progress)
    except BaseException:  # Ctrl-C, a full disk: stop hashing too, at once
        hasher.stop.set()
        raise
    finally:
        hasher.join()
    if hasher.error is not None:
        raise hasher.error
    return hasher.digest


class _Hasher(threading.Thread):
    def __init__(self, weights: Weights, length: int) -> None:
        super().__init__(name="llmpack-sha256", daemon=True)
        self._weights, self._length = weights, length
        self.digest = ""
        self.error: BaseException | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            digest = hashlib.sha256()
            view = memoryview(bytearray(CHUNK))
            done = 0
            with open(self._weights.path, "rb") as f:
                f.seek(self._weights.offset)
                while done < self._length and not self.stop.is_set():
                    n = f.readinto(view[:min(CHUNK, self._length - done)])
                    if not n:
                        raise BuildError(messages.GGUF_TRUNCATED.format(path=self._weights.path))
                    digest.update(view[:n])  # releases the GIL: the copy goes on meanwhile
                    done += n
            self.digest = digest.hexdigest()
        except BaseException as exc:  # re-raised by copy_and_hash in the caller's thread
            self.error = exc


def _kernel_copy(weights: Weights, out: BinaryIO, length: int, progress: Progress | None) -> bool:
    """copy_file_range from the weights into `out`; False (nothing copied) where it is unavailable."""
    if not hasattr(os, "copy_file_range"):
        return False
    out.flush()
    start = out.tell()
    done = 0
    with open(weights.path, "rb") as src:
        while done < length:
            try:
                n = os.copy_file_range(src.fileno(), out.fileno(), min(CHUNK * 4, length - done),
                                       weights.offset + done, start + done)
            except OSError as exc:
                if done == 0 and exc.errno in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                    return False  # e.g. across filesystems on an old kernel: copy through Python
                raise
            if n == 0:
                raise BuildError(messages.GGUF_TRUNCATED.format(path=weights.path))
            done += n
            if progress:
                progress(done, length)
    out.seek(start + length)
    return True


def _buffered_copy(weights: Weights, out: BinaryIO, length: int, progress: Progress | None) -> None:
    view = memoryview(bytearray(CHUNK))
    done = 0
    with open(weights.path, "rb") as f:
        f.seek(weights.offset)
        while done < length:
            n = f.readinto(view[:min(CHUNK, length - done)])
            if not n:
                raise BuildError(messages.GGUF_TRUNCATED.format(path=weights.path))
            out.write(view[:n])
            done += n
            if progress:
                progress(done, length)


class atomic_output:
    """`with atomic_output(path) as f:` writes to a temporary file beside `path`, renamed over it on
    success and removed on failure, so an interrupted build never leaves a partial executable."""

    def __init__(self, path: Path, mode: int = 0o644) -> None:
        self.path = Path(path)
        self.mode = mode

    def __enter__(self) -> BinaryIO:
        directory = self.path.parent
        try:
            fd, self._tmp = tempfile.mkstemp(dir=directory, prefix=f".{self.path.name}.", suffix=".partial")
        except OSError as exc:
            raise BuildError(messages.OUTPUT_UNWRITABLE.format(path=self.path, reason=exc.strerror or exc)) from None
        self._file = os.fdopen(fd, "wb")
        return self._file

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._file.flush()
                if hasattr(os, "fchmod"):  # not on Windows
                    os.fchmod(self._file.fileno(), self.mode)
                self._file.close()
                os.replace(self._tmp, self.path)
                return
        except OSError as error:
            exc = error
        self._file.close()
        Path(self._tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            reason = "no space left on the device" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
            raise BuildError(messages.OUTPUT_UNWRITABLE.format(path=self.path, reason=reason)) from None
