"""Finds the weights (embedded in this executable, or -m FILE), checks them, and loads the engine."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import messages
from ..engine.context_size import describe_context
from ..engine.engine import Engine
from ..engine.native import (
    gpu_offload_supported,
    in_place_loading_supported,
    load_backends,
)
from ..engine.types import EngineConfig, ModelSource
from ..errors import CorruptBundle, ModelNotFound, NoModel, NotAGguf, UserError
from ..flags.settings import Settings
from .payload_format import GGUF_MAGIC, Payload, verify_weights
from ..progress import Progress
from .runtime_pack import damage_in_folder, damage_in_pack
from .projector import with_projector
from .draft_payload import with_draft
from .user_cache import cache_root

log = logging.getLogger(__name__)


def resolve_source(settings: Settings, payload: Payload | None) -> ModelSource:
    if settings.model:
        _check_loose_gguf(settings.model)
        return ModelSource(settings.model)
    if payload is None:
        raise NoModel()
    if settings.verify:
        check_runtime(payload)
        check_weights(payload, show_progress=not settings.log_disable)
    if payload.gguf_offset == 0 or in_place_loading_supported():  # a sidecar, or weights inside us
        return ModelSource(payload.path, payload.gguf_offset)
    return ModelSource(str(_extract_once(payload)))


def check_weights(payload: Payload, show_progress: bool) -> None:
    progress = Progress("verifying weights", show_progress)
    if not verify_weights(payload, lambda done, total: progress.update(done / total)):
        raise UserError(messages.WEIGHTS_MISMATCH.format(path=payload.path))
    progress.done(messages.WEIGHTS_VERIFIED.format(sha256=payload.gguf_sha256))


def check_runtime(payload: Payload) -> None:
    """The runtime pack inside the executable against its sha256, and the folder the launcher unpacked
    it into against the pack. A damaged folder is removed: the next start unpacks it again."""
    offset, length, sha256 = payload.runtime
    if not length:
        return
    reason = damage_in_pack(payload.executable, offset, length, sha256)
    if reason is not None:
        raise CorruptBundle(payload.executable, reason)
    folder = os.environ.get("LLMPACK_RUNTIME_DIR")  # where the launcher unpacked the runtime it started
    if folder:
        reason = damage_in_folder(payload.executable, offset, length, folder)
        if reason is not None:
            shutil.rmtree(folder, ignore_errors=True)
            raise UserError(messages.RUNTIME_FOLDER_DAMAGED.format(folder=folder, reason=reason))
    log.info(messages.RUNTIME_VERIFIED.format(sha256=sha256))


def _check_loose_gguf(path: str) -> None:
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except IsADirectoryError:
        raise ModelNotFound(path, "it is a directory") from None
    except OSError as exc:
        raise ModelNotFound(path, exc.strerror or str(exc)) from None
    if magic != GGUF_MAGIC:
        raise NotAGguf(path)


def _extract_once(payload: Payload) -> Path:
    """Fallback where llama.cpp cannot read from inside our file: extract the weights once into a
    cache keyed by their sha256, verifying while copying, and reuse that copy on later starts."""
    cache = cache_root() / "weights"
    target = cache / f"{payload.gguf_sha256}.gguf"
    if target.exists() and target.stat().st_size == payload.gguf_length:
        return target
    cache.mkdir(parents=True, exist_ok=True)
    log.info("extracting the weights once to %s", target)
    with open(payload.path, "rb") as src, tempfile.NamedTemporaryFile(dir=cache, delete=False) as tmp:
        src.seek(payload.gguf_offset)
        remaining = payload.gguf_length
        while remaining:
            block = src.read(min(remaining, 8 << 20))
            if not block:
                raise CorruptBundle(payload.path, "the weights end early (truncated?)")
            tmp.write(block)
            remaining -= len(block)
    os.replace(tmp.name, target)
    return target


def load_engine(settings: Settings, payload: Payload | None, config: EngineConfig) -> Engine:
    source = resolve_source(settings, payload)
    devices = load_backends()
    if settings.n_gpu_layers != 0 and not gpu_offload_supported():
        warn_no_gpu(settings.n_gpu_layers, devices)
    config = with_projector(settings, payload, config)  # --mmproj's, or the one this executable carries
    config = with_draft(settings, payload, config)  # -md's, or the one this executable carries
    progress = Progress("loading model", not settings.log_disable)
    engine = _built_off_the_main_thread(lambda: Engine(source, config, progress.update))
    context = describe_context(engine.n_ctx, engine.context_size)
    placement = engine.offload.describe()
    progress.done(f"{engine.model_name}, context {context}, {settings.thread_count()} threads"
                  + (f", {placement}" if placement else ""))
    return engine


def _built_off_the_main_thread(build: Callable[[], Engine]) -> Engine:
    """The engine built on a thread of its own, as the server's is. Measured on an AMX CPU (Sapphire
    Rapids, Gemma 3 270M, 2 threads): an engine whose weights were loaded and repacked for AMX on the
    main thread decodes at 35 tok/s, one loaded on another thread at 64 (llama-bench: 70); without the
    AMX repack (-nr) both give 47. Daemon: a Ctrl-C while loading exits without waiting for it. Already
    off the main thread (the server loads on its own while it listens): built right there."""
    if threading.current_thread() is not threading.main_thread():
        return build()
    result: dict[str, Any] = {}

    def load() -> None:
        try:
            result["engine"] = build()
        except BaseException as exc:  # noqa: BLE001 - re-raised on the caller's thread
            result["error"] = exc

    loader = threading.Thread(target=load, name="llmpack-loader", daemon=True)
    loader.start()
    loader.join()
    if "error" in result:
        raise result["error"]
    return result["engine"]


def warn_no_gpu(n_gpu_layers: int, devices: list[str]) -> None:
    """Nothing to offload to: with -ngl N, one warning that says why (no GPU backend in this file, or each
    carried backend's reason); with -ngl auto, one only where a GPU's device file is but its backend
    found nothing (a driver missing or broken). The CPU computes everything."""
    from ..engine.native_libs import gpu_status

    reasons = gpu_status()
    if n_gpu_layers < 0:  # -ngl auto: silent without a GPU; a GPU whose driver fails says so once
        probed = [reason for reason in reasons if "no GPU device file" not in reason]
        if probed:
            log.warning(messages.GPU_DRIVER_UNUSABLE.format(reasons="; ".join(probed)))
    elif reasons:
        log.warning(messages.GPU_NOT_FOUND.format(n=n_gpu_layers, reasons="; ".join(reasons)))
    else:
        log.warning(messages.GPU_UNAVAILABLE.format(n=n_gpu_layers, backends=", ".join(devices) or "none"))

