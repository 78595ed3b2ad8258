"""The multimodal projector (llama.cpp's `mmproj-*.gguf`: images and audio in) on the build side: checked
as a projector, carried after the weights with its own sha256 in the manifest's "mmproj" (bundle.py), read
back by `inspect`, `--verify`, `unpack --mmproj` and `repack`, and found on the hub beside the weights as
llama-server's `-hf` finds it (common/download.cpp `find_best_sibling`)."""

from __future__ import annotations

import logging
import re
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from . import messages
from .bundle import Projector, Weights
from .errors import BuildError
from .gguf_info import read_gguf_info
from .payload_format import BundleInfo
from .ranges import hash_range

log = logging.getLogger(__name__)


def local_projector(path: Path, source: dict[str, Any] | None = None) -> Projector:
    """A projector file to bundle; BuildError unless it is a projector GGUF."""
    info = read_gguf_info(str(path))
    if info.architecture != "clip":
        raise BuildError(messages.MMPROJ_NOT_PROJECTOR.format(path=path, architecture=info.architecture))
    return Projector(Weights(path), {"file": (source or {}).get("file", path.name),
                                     "source": source or {"type": "file", "file": path.name}})


def carried(info: BundleInfo, key: str = "mmproj") -> Projector | None:
    """The projector (or the GGUF under `key`) inside an executable, as a range to copy (repack keeps it)."""
    entry = info.manifest.get(key)
    if not isinstance(entry, dict):
        return None
    kept = {k: v for k, v in entry.items() if k not in ("offset", "length", "sha256")}
    return Projector(Weights(Path(info.path), int(entry["offset"]), int(entry["length"])), kept)


def hash_carried(info: BundleInfo, out: BinaryIO | None = None, label: str = "verifying projector",
                 key: str = "mmproj") -> str:
    """sha256 of the carried projector (or the GGUF under `key`), optionally copying it to `out` on the way."""
    entry = info.manifest[key]
    return hash_range(Path(info.path), int(entry["offset"]), int(entry["length"]), label, out)


def describe(info: BundleInfo) -> str:
    entry = info.manifest.get("mmproj")
    if not isinstance(entry, dict):
        return "none (text only; llmpack build --mmproj FILE carries one)"
    return (f"{entry.get('file')}: offset {entry.get('offset')}, length {entry.get('length')}, "
            f"sha256 {entry.get('sha256')}")


def for_build(mmproj: str | None, no_mmproj: bool, mmproj_file: str | None, gguf: Path, source: dict[str, Any],
              quiet: bool) -> Projector | None:
    """--mmproj FILE; else, from the hub, the repository's projector (--mmproj-file names one); none with
    --no-mmproj."""
    if no_mmproj:
        return None
    if mmproj:
        return local_projector(Path(mmproj))
    if source.get("type") != "huggingface":
        return None
    file = str(source["file"])
    # The weights' folder in huggingface-hub's cache (a merged split lies elsewhere: then online only).
    snapshot = None if source.get("parts") else gguf.parents[len(PurePosixPath(file).parts) - 1]
    return hub_projector(str(source["repo"]), file, source.get("revision"), snapshot, mmproj_file, quiet)


# -- the hub ---------------------------------------------------------------------------------------

def _quant_bits(name: str) -> int:
    """llama.cpp's extract_quant_bits: the first number of the name's last '-' part (Q4_K_M: 4, f16: 16)."""
    stem = PurePosixPath(name).name.removesuffix(".gguf")
    stem = re.sub(r"-\d{5}-of-\d{5}$", "", stem)
    tag = stem.rsplit("-", 1)[-1] if "-" in stem else stem
    match = re.search(r"\d+", tag)
    return int(match.group()) if match else 0


def best_projector(files: list[str], model: str) -> str | None:
    """llama-server's choice among the repository's files: a GGUF whose name holds "mmproj", in the model's
    folder or one above it, the deepest such folder first, then the closest quantization to the model's."""
    model_dir = PurePosixPath(model).parent.parts
    best, best_key = None, None
    for name in sorted(files):
        if not name.endswith(".gguf") or "mmproj" not in name:
            continue
        folder = PurePosixPath(name).parent.parts
        if folder != model_dir[:len(folder)]:
            continue
        key = (-len(folder), abs(_quant_bits(name) - _quant_bits(model)))
        if best_key is None or key < best_key:
            best, best_key = name, key
    return best


def hub_projector(repo: str, model_file: str, commit: str | None, snapshot: Path | None, wanted: str | None,
                  quiet: bool) -> Projector | None:
    """The repository's projector, fetched at the weights' commit: `wanted` (--mmproj-file), else
    llama-server's choice, said in one line (with the others when there are several). None: none there."""
    from .hub import fetch_gguf, list_files

    files = list_files(repo, commit, snapshot)
    name = wanted or best_projector(files, model_file)
    if name is None:
        return None
    others = [f for f in files if f.endswith(".gguf") and "mmproj" in f and f != name]
    if others and not wanted:
        log.warning(messages.MMPROJ_HUB_SEVERAL.format(repo=repo, names=", ".join([name, *others]), chosen=name))
    else:
        log.info(messages.MMPROJ_HUB_FOUND.format(repo=repo, name=name))
    fetched = fetch_gguf(repo, name, commit, quiet=quiet)
    return local_projector(fetched.paths[0], fetched.source)
