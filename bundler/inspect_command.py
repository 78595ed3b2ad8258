"""`llmpack inspect` (what is inside, optionally re-hashing the weights) and `llmpack unpack`."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from . import draft, messages, mmproj
from .bundle import atomic_output
from .errors import BuildError, error_line
from .payload_format import FLAG_SIDECAR, BundleInfo, read_bundle, weights_path
from .ranges import hash_range
from .runtime_build import RUNTIME_NAME, cache_root

log = logging.getLogger(__name__)


def hash_weights(info: BundleInfo, out=None, label: str = "verifying weights") -> str:
    """sha256 of the embedded GGUF, optionally copying it to `out` on the way."""
    return hash_range(weights_path(info), info.gguf_offset, info.gguf_length, label, out)


def describe(info: BundleInfo) -> str:
    m = info.manifest
    model, runtime, builder = m.get("model", {}), m.get("runtime", {}), m.get("builder", {})
    rows = [
        ("file", info.path),
        ("size", f"{info.size:,} bytes, weights beside it in {weights_path(info)} ({info.gguf_length:,} bytes)"
         if info.flags & FLAG_SIDECAR else
         f"{info.size:,} bytes (runtime {info.size - info.gguf_length:,} + weights {info.gguf_length:,})"),
        ("model", model.get("name")),
        ("architecture", model.get("architecture")),
        ("quantization", model.get("quantization")),
        ("source", json.dumps(model.get("source"), sort_keys=True)),
        ("weights", f"offset {info.gguf_offset}, length {info.gguf_length}"),
        ("sha256", info.gguf_sha256),
        ("projector", mmproj.describe(info)),
        ("draft model", draft.describe(info)),
        ("default args", " ".join(m.get("default_args", [])) or "(none)"),
        ("runtime", f"{runtime.get('target')} (llama-cpp-python {runtime.get('llama_cpp_python')}, "
                    f"Python {runtime.get('python')}, needs glibc >= {runtime.get('min_glibc') or 'n/a'})"),
        ("gpu backends", ", ".join(runtime.get("gpu") or []) or "none (the CPU only: llmpack build --gpu)"),
        ("runtime cache", _describe_cache_entry(info)),
        ("built", f"{m.get('built_at')} by {builder.get('name')} {builder.get('version')}"),
        ("payload format", str(info.format_version)),
    ]
    width = max(len(k) for k, _ in rows)
    return "".join(f"{k.ljust(width)}  {v}\n" for k, v in rows)


def runtime_cache_entry(info: BundleInfo) -> Path | None:
    """The folder the launcher unpacks this executable's runtime into (None for a version 1 file)."""
    if info.runtime is None:
        return None
    return cache_root() / "runtime" / info.runtime.sha256[:16]


def _describe_cache_entry(info: BundleInfo) -> str:
    entry = runtime_cache_entry(info)
    if entry is None:
        return "none (PyInstaller one-file runtime: unpacked to a temporary folder at every start)"
    state = "unpacked" if (entry / RUNTIME_NAME).is_file() else "not unpacked yet: the first start unpacks it"
    return f"{entry} ({state}; runtime sha256 {info.runtime.sha256})"


def inspect(path: str, as_json: bool, verify: bool) -> int:
    info = read_bundle(path)
    verified, projector_ok, draft_ok = None, True, True
    if verify:
        verified = hash_weights(info) == info.gguf_sha256
        entry = info.manifest.get("mmproj")
        projector_ok = not isinstance(entry, dict) or mmproj.hash_carried(info) == entry.get("sha256")
        draft_entry = draft.entry(info)
        draft_ok = draft_entry is None or draft.hash_carried(info) == draft_entry.get("sha256")
    if as_json:
        document = {"path": info.path, "size": info.size, "format_version": info.format_version,
                    "gguf_offset": info.gguf_offset, "gguf_length": info.gguf_length,
                    "gguf_sha256": info.gguf_sha256, "weights_file": str(weights_path(info)),
                    "manifest": info.manifest}
        if info.runtime is not None:
            entry = runtime_cache_entry(info)
            document["runtime"] = {"offset": info.runtime.offset, "length": info.runtime.length,
                                   "sha256": info.runtime.sha256, "cache_entry": str(entry),
                                   "unpacked": (entry / RUNTIME_NAME).is_file()}
        if verify:
            document["verified"] = verified and projector_ok and draft_ok
        sys.stdout.write(json.dumps(document, indent=2, sort_keys=True) + "\n")
    else:
        sys.stdout.write(describe(info))
    if verified is False:
        print(error_line(messages.WEIGHTS_MISMATCH.format(path=path)), file=sys.stderr)
        return 1
    if not projector_ok:
        print(error_line(messages.MMPROJ_MISMATCH.format(path=path)), file=sys.stderr)
        return 1
    if not draft_ok:
        print(error_line(messages.DRAFT_MISMATCH.format(path=path)), file=sys.stderr)
        return 1
    if verified and draft.entry(info):
        log.info(messages.DRAFT_VERIFIED.format(sha256=draft.entry(info)["sha256"]))
    if verified and isinstance(info.manifest.get("mmproj"), dict):
        log.info(messages.MMPROJ_VERIFIED.format(sha256=info.manifest["mmproj"]["sha256"]))
    if verified:
        log.info(messages.VERIFIED.format(sha256=info.gguf_sha256))
    return 0


def unpack(path: str, output: Path, projector: Path | None = None, draft_output: Path | None = None) -> None:
    info = read_bundle(path)
    entry = info.manifest.get("mmproj")
    if projector is not None and not isinstance(entry, dict):
        raise BuildError(messages.MMPROJ_NONE_IN_BUNDLE.format(path=path))
    if draft_output is not None and draft.entry(info) is None:
        raise BuildError(messages.DRAFT_NONE_IN_BUNDLE.format(path=path))
    with atomic_output(output) as out:
        if hash_weights(info, out, label="unpacking weights") != info.gguf_sha256:
            raise BuildError(messages.WEIGHTS_MISMATCH.format(path=path))
    log.info("wrote %s (%d bytes, sha256 %s)", output, info.gguf_length, info.gguf_sha256)
    if projector is not None:
        with atomic_output(projector) as out:
            if mmproj.hash_carried(info, out, label="unpacking projector") != entry["sha256"]:
                raise BuildError(messages.MMPROJ_MISMATCH.format(path=path))
        log.info("wrote %s (%d bytes, sha256 %s)", projector, entry["length"], entry["sha256"])
    if draft_output is not None:
        found = draft.entry(info)
        with atomic_output(draft_output) as out:
            if draft.hash_carried(info, out, label="unpacking draft model") != found["sha256"]:
                raise BuildError(messages.DRAFT_MISMATCH.format(path=path))
        log.info("wrote %s (%d bytes, sha256 %s)", draft_output, found["length"], found["sha256"])
