"""`llmpack build`: validate the weights and arguments, get a runtime, write the executable."""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from . import __version__, messages
from .bundle import write_bundle
from .errors import BuildError
from .gguf_info import GgufInfo, read_gguf_info
from .progress import ByteProgress
from .runtime_build import ensure_runtime, host_target, runtime_versions
from .smoke import check_default_args

log = logging.getLogger(__name__)


def parse_default_args(text: str) -> list[str]:
    try:
        return shlex.split(text, comments=True)
    except ValueError as exc:
        raise BuildError(messages.BAD_ARGS.format(reason=str(exc))) from None


def build_time() -> str:
    """UTC build time; SOURCE_DATE_EPOCH pins it so that identical inputs give identical bytes."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    moment = (datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc) if epoch
              else datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0))
    return moment.isoformat().replace("+00:00", "Z")


def make_manifest(info: GgufInfo, gguf: Path, sha256: str, name: str | None, default_args: list[str],
                  source: dict[str, Any], target: str) -> dict[str, Any]:
    return {
        "model": {
            "name": name or info.name or gguf.stem,
            "architecture": info.architecture,
            "quantization": info.quantization,
            "file": gguf.name,
            "size": info.size,
            "sha256": sha256,
            "source": source,
            "chat_template": info.has_chat_template,
        },
        "default_args": default_args,
        "builder": {"name": "llmpack", "version": __version__},
        "built_at": build_time(),
        "runtime": {"target": target, **runtime_versions()},
    }


def default_output(gguf: Path) -> Path:
    return gguf.with_suffix(".llmpack") if gguf.suffix == ".gguf" else gguf.with_name(gguf.name + ".llmpack")


def check_writable(output: Path, gguf: Path) -> None:
    """Fails before any slow work when the output cannot be written."""
    if output.resolve() == gguf.resolve():
        raise BuildError(messages.OUTPUT_UNWRITABLE.format(path=output, reason="it is the input GGUF"))
    directory = output.parent
    if not directory.is_dir():
        raise BuildError(messages.OUTPUT_UNWRITABLE.format(path=output, reason=f"no directory {directory}"))
    if not os.access(directory, os.W_OK):
        raise BuildError(messages.OUTPUT_UNWRITABLE.format(path=output, reason=f"{directory} is not writable"))


def resolve_weights(args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    """The local GGUF to bundle (its first part, for a split GGUF) and where it came from."""
    if args.hf_repo or args.hf_file:
        if args.gguf or not (args.hf_repo and args.hf_file):
            raise BuildError(messages.WEIGHTS_SOURCE)
        from .hub import fetch_gguf

        fetched = fetch_gguf(args.hf_repo, args.hf_file, args.revision)
        return fetched.paths[0], fetched.source
    if not args.gguf:
        raise BuildError(messages.WEIGHTS_SOURCE)
    return Path(args.gguf), {"type": "file", "file": Path(args.gguf).name}


def build(args: argparse.Namespace) -> Path:
    gguf, source = resolve_weights(args)
    info = read_gguf_info(str(gguf))
    default_args = parse_default_args(args.args)
    output = Path(args.output) if args.output else default_output(gguf)
    check_writable(output, gguf)
    runtime = args.runtime or ensure_runtime(rebuild=args.rebuild_runtime)
    log.info("bundling %s (%s, %s, %.1f MB) into %s", gguf.name, info.architecture, info.quantization,
             info.size / 1e6, output)
    progress = ByteProgress("bundling weights", enabled=not args.quiet)
    result = write_bundle(
        Path(runtime), gguf, output,
        lambda sha256: make_manifest(info, gguf, sha256, args.name, default_args, source, host_target()),
        progress.update)
    progress.done()
    if args.runtime is None:
        check_default_args(result.path, default_args)
    log.info("wrote %s: %.1f MB (runtime %.1f MB + weights %.1f MB), sha256 of the weights %s",
             output, result.size / 1e6, (result.size - result.gguf_length) / 1e6, result.gguf_length / 1e6,
             result.gguf_sha256[:16])
    print(output, file=sys.stdout)
    return output
