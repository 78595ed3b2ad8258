"""What `llmpack build` and `llmpack repack` are asked to do, as frozen dataclasses: the command line is
parsed in cli.py and never passed further as an `argparse.Namespace`, so the commands (and their tests)
take a typed value with defaults instead of a bag of attributes."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RuntimeChoice:
    runtime: Path | None = None  # a runtime folder built elsewhere (--runtime-dir)
    target: str | None = None  # OS-ARCH of the executable (default: this machine's)
    rebuild_runtime: bool = False
    gpu: str | None = None  # --gpu: vulkan, cuda, vulkan,cuda or none (default: vulkan where it is built)


@dataclass(frozen=True)
class BuildOptions(RuntimeChoice):
    gguf: str | None = None
    hf_repo: str | None = None
    hf_file: str | None = None
    revision: str | None = None
    output: str | None = None
    args: str = ""  # default arguments stored in the executable, as one shell-quoted string
    name: str | None = None
    quantize: str | None = None
    force_quantize: bool = False
    sidecar: bool = False
    quiet: bool = False
    mmproj: str | None = None  # a projector GGUF to carry (images and audio)
    no_mmproj: bool = False  # carry none, not even the hub repository's
    mmproj_file: str | None = None  # the projector's file in --hf-repo (default: llama-server's choice)
    draft: str | None = None  # a draft model GGUF to carry (speculative decoding, llama-server's -md)


@dataclass(frozen=True)
class RepackOptions(RuntimeChoice):
    bundle: str = ""
    model: Path | None = None
    output: str | None = None
    args: str | None = None  # None: keep the stored arguments
    quiet: bool = False
    mmproj: Path | None = None  # a new projector (default: keep the carried one)
    no_mmproj: bool = False  # leave the carried projector out
    draft: Path | None = None  # a new draft model (default: keep the carried one)
    no_draft: bool = False  # leave the carried draft model out


def from_namespace(kind: type, namespace: argparse.Namespace):
    """The options of `kind` from argparse's result (cli.py only): unknown attributes are argparse's own."""
    names = {f.name for f in dataclasses.fields(kind)}
    return kind(**{k: v for k, v in vars(namespace).items() if k in names})
