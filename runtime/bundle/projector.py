"""The multimodal projector an executable carries (`llmpack build --mmproj`): where it is, and the file
libmtmd opens.

The manifest's "mmproj" records the projector's offset, length and sha256 inside the executable (the
manifest itself is checked against its sha256 in the footer). libmtmd opens a projector by file name
only (clip.cpp: gguf_init_from_file, then an ifstream for the tensors), so it cannot read one in place
at an offset as llama.cpp reads the weights: the projector is copied once per machine into the cache,
named by its sha256 and verified while copying, and every later start opens that copy (a few hundred MB
for real projectors, written once)."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..engine.types import EngineConfig
from ..errors import CorruptBundle, UserError
from ..flags.settings import Settings
from .payload_format import GGUF_MAGIC, Payload
from .user_cache import cache_root

log = logging.getLogger(__name__)
CHUNK = 8 << 20
GGUF_MISMATCH = "the {what} inside {path} does not match its recorded sha256: the file is damaged"
PROJECTOR_MISMATCH = GGUF_MISMATCH.replace("{what}", "projector")
PROJECTOR_MISSING = "--mmproj {path}: no such file"
PROJECTOR_VERIFIED = "{what} verified: sha256 {sha256}"


@dataclass(frozen=True)
class EmbeddedProjector:
    path: str  # the executable
    offset: int
    length: int
    sha256: str
    file: str  # its name when it was bundled


def embedded_projector(payload: Payload | None, key: str = "mmproj") -> EmbeddedProjector | None:
    """The projector the manifest records (or the GGUF under `key`: "draft", runtime/bundle/draft_payload.py),
    checked to lie inside the file and to start as a GGUF."""
    entry = (payload.manifest or {}).get(key) if payload is not None else None
    if not isinstance(entry, dict):
        return None
    try:
        found = EmbeddedProjector(payload.executable or payload.path, int(entry["offset"]), int(entry["length"]),
                                  str(entry["sha256"]), str(entry.get("file", f"{key}.gguf")))
    except (KeyError, TypeError, ValueError):
        raise CorruptBundle(payload.path, f"the manifest's {key} entry is malformed") from None
    with open(found.path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        if found.offset <= 0 or found.length <= 0 or found.offset + found.length > size:
            raise CorruptBundle(found.path, f"the {key} entry lies outside the file (truncated?)")
        f.seek(found.offset)
        if f.read(4) != GGUF_MAGIC:
            raise CorruptBundle(found.path, f"the embedded {key} GGUF does not start with a GGUF header")
    return found


def _copy(projector: EmbeddedProjector, out) -> str:
    digest = hashlib.sha256()
    with open(projector.path, "rb") as src:
        src.seek(projector.offset)
        remaining = projector.length
        while remaining:
            block = src.read(min(remaining, CHUNK))
            if not block:
                raise CorruptBundle(projector.path, "the projector ends early (truncated?)")
            digest.update(block)
            if out is not None:
                out.write(block)
            remaining -= len(block)
    return digest.hexdigest()


def verify(projector: EmbeddedProjector, what: str = "projector") -> None:
    if _copy(projector, None) != projector.sha256:
        raise UserError(GGUF_MISMATCH.format(what=what, path=projector.path))
    log.info(PROJECTOR_VERIFIED.format(what=what, sha256=projector.sha256))


def projector_file(projector: EmbeddedProjector, folder: str = "mmproj") -> Path:
    """The cached copy libmtmd opens, written once (verified while copying) and reused."""
    cache = cache_root() / folder
    target = cache / f"{projector.sha256}.gguf"
    if target.is_file() and target.stat().st_size == projector.length:
        return target
    cache.mkdir(parents=True, exist_ok=True)
    log.info("copying the %s once to %s (it is read from a file of its own)", folder, target)
    with tempfile.NamedTemporaryFile(dir=cache, delete=False) as tmp:
        try:
            digest = _copy(projector, tmp)
        except BaseException:
            tmp.close()
            os.unlink(tmp.name)
            raise
    if digest != projector.sha256:
        os.unlink(tmp.name)
        raise UserError(GGUF_MISMATCH.format(what=folder, path=projector.path))
    os.replace(tmp.name, target)
    return target


def with_projector(settings: Settings, payload: Payload | None, config: EngineConfig) -> EngineConfig:
    """--mmproj FILE wins; else the embedded projector, unless --no-mmproj or -m other weights (a
    projector belongs to the model it was made for)."""
    if config.mmproj and not os.path.isfile(config.mmproj):
        raise UserError(PROJECTOR_MISSING.format(path=config.mmproj))
    if settings.no_mmproj or config.mmproj or settings.model:
        return config
    projector = embedded_projector(payload)
    if projector is None:
        return config
    if settings.verify:
        verify(projector)
    return dataclasses.replace(config, mmproj=str(projector_file(projector)))
