"""A draft model for speculative decoding (llama-server's -md: a smaller model of the same vocabulary)
on the build side: carried after the weights (and the projector, if any) with its own sha256 in the
manifest's "draft" (bundle.py), read back by `inspect`, `--verify`, `unpack --draft` and `repack`, as the
projector is (mmproj.py). The runtime reads it in place, as it reads the weights
(runtime/bundle/draft_payload.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, BinaryIO

from . import messages, mmproj
from .bundle import Projector, Weights
from .errors import BuildError
from .gguf_info import read_gguf_info
from .payload_format import BundleInfo

KEY = "draft"  # the manifest's entry
# What llama.cpp's common_speculative_are_compatible compares that the metadata holds; it checks the
# token texts themselves when the executable starts.
_SAME = ("tokenizer.ggml.model", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id")


def local_draft(path: Path, weights: Path | None = None) -> Projector:
    """A draft model file to carry; BuildError unless it is a language model whose tokenizer is the
    weights' (where `weights` is given)."""
    info = read_gguf_info(str(path))
    if info.architecture == "clip":
        raise BuildError(messages.DRAFT_NOT_A_MODEL.format(path=path, reason="it is a multimodal projector (--mmproj)"))
    if weights is not None:
        main = read_gguf_info(str(weights))
        differs = [key for key in _SAME if main.metadata.get(key) != info.metadata.get(key)]
        if differs:
            reason = "its tokenizer differs from the weights' (" + ", ".join(
                f"{key}: {info.metadata.get(key)!r}, the weights' {main.metadata.get(key)!r}" for key in differs) + ")"
            raise BuildError(messages.DRAFT_NOT_A_MODEL.format(path=path, reason=reason))
    return Projector(Weights(path), {"file": path.name, "source": {"type": "file", "file": path.name}})


def carried(info: BundleInfo) -> Projector | None:
    """The draft model inside an executable, as a range to copy (repack keeps it)."""
    return mmproj.carried(info, KEY)


def hash_carried(info: BundleInfo, out: BinaryIO | None = None, label: str = "verifying draft model") -> str:
    return mmproj.hash_carried(info, out, label, KEY)


def entry(info: BundleInfo) -> dict[str, Any] | None:
    found = info.manifest.get(KEY)
    return found if isinstance(found, dict) else None


def describe(info: BundleInfo) -> str:
    found = entry(info)
    if found is None:
        return "none (llmpack build --draft FILE carries one)"
    return (f"{found.get('file')}: offset {found.get('offset')}, length {found.get('length')}, "
            f"sha256 {found.get('sha256')}")
