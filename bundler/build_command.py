"""`llmpack build`: validate the weights and arguments, get a runtime, write the executable."""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import shlex
import sys
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

from . import __version__, draft, messages, mmproj
from .bundle import BundleResult, Projector, Weights, read_runtime, write_bundle
from .errors import BuildError
from .gguf_info import GgufInfo, read_gguf_info
from .gguf_split import merge_splits, merged_name, split_parts
from .options import BuildOptions
from .progress import ByteProgress
from .quantize import check_quantizable, quantize
from .runtime_build import host_target
from .smoke import check_default_args
from .targets import select_runtime, wants_sidecar

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
                  source: dict[str, Any], runtime: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": {
            "name": name or info.name or gguf.stem,
            "architecture": info.architecture,
            "quantization": info.quantization,
            "file": source.get("file", gguf.name),
            "size": info.size,
            "sha256": sha256,
            "source": source,
            "chat_template": info.has_chat_template,
        },
        "default_args": default_args,
        "builder": {"name": "llmpack", "version": __version__},
        "built_at": build_time(),
        "runtime": {k: v for k, v in runtime.items() if k != "key"},
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


@contextlib.contextmanager
def resolve_weights(args: BuildOptions) -> Iterator[tuple[Path, dict[str, Any], Path]]:
    """The local GGUF to bundle, where it came from (the manifest's source), and the executable to write.

    A split GGUF (`-00001-of-0000N.gguf`, a local first part or from the hub) is merged into one GGUF in
    a temporary folder beside the output, removed when the build ends, also on failure or Ctrl-C."""
    if args.hf_repo or args.hf_file:
        if args.gguf or not (args.hf_repo and args.hf_file):
            raise BuildError(messages.WEIGHTS_SOURCE)
        from .hub import fetch_gguf

        # By default in the current folder: the weights' own folder is huggingface-hub's cache.
        name = merged_name(PurePosixPath(args.hf_file).name)
        output = Path(args.output) if args.output else Path(default_output(Path(name)).name)
        check_writable(output, output.parent)  # before a download that may take hours
        fetched = fetch_gguf(args.hf_repo, args.hf_file, args.revision, quiet=args.quiet)
        parts, source = fetched.paths, fetched.source
    else:
        if not args.gguf:
            raise BuildError(messages.WEIGHTS_SOURCE)
        first = Path(args.gguf)
        parts = split_parts(first)
        source = {"type": "file", "file": first.name}
        if len(parts) > 1:
            source["parts"] = len(parts)
        output = Path(args.output) if args.output else default_output(first.with_name(merged_name(first.name)))
    if len(parts) == 1:
        yield parts[0], source, output
        return
    check_writable(output, parts[0])
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=f".{output.name}.merge-") as folder:
        merged = Path(folder) / merged_name(parts[0].name)
        log.info("merging the %d parts of %s", len(parts), parts[0].name)
        progress = ByteProgress("merging parts", enabled=not args.quiet)
        merge_splits(parts, merged, progress.update)
        progress.done()
        yield merged, source, output


def build(args: BuildOptions) -> Path:
    with resolve_weights(args) as (gguf, source, output):
        projector = mmproj.for_build(args.mmproj, args.no_mmproj, args.mmproj_file, gguf, source, args.quiet)
        carried_draft = draft.local_draft(Path(args.draft), gguf) if args.draft else None
        if carried_draft is not None and args.sidecar:  # before the runtime is chosen (an automatic sidecar: later)
            raise BuildError(messages.DRAFT_WITH_SIDECAR)
        return bundle_weights(args, gguf, source, output, projector, carried_draft)


def bundle_weights(args: BuildOptions, gguf: Path, source: dict[str, Any], output: Path,
                   projector: Projector | None = None, carried_draft: Projector | None = None) -> Path:
    info = read_gguf_info(str(gguf))
    default_args = parse_default_args(args.args)
    check_writable(output, gguf)
    if args.quantize:
        check_quantizable(info, args.quantize, args.force_quantize)
    runtime = select_runtime(args.runtime, args.target, args.rebuild_runtime, args.gpu)
    with contextlib.ExitStack() as cleanup:
        if args.quantize:
            quantized = output.parent / f".{output.name}.{args.quantize}.gguf.partial"
            cleanup.callback(quantized.unlink, missing_ok=True)
            quantize(gguf, quantized, args.quantize, quiet=args.quiet)
            source = {**source, "quantized_from": info.quantization}
            gguf, info = quantized, read_gguf_info(str(quantized))
        sidecar = wants_sidecar(runtime.target, info.size, args.sidecar)
        log.info("bundling %s (%s, %s, %.1f MB) for %s into %s", source.get("file", gguf.name), info.architecture,
                 info.quantization, info.size / 1e6, runtime.target, output)
        progress = ByteProgress("bundling weights", enabled=not args.quiet)
        result = write_bundle(
            read_runtime(runtime.path), Weights(gguf), output,
            lambda sha256: make_manifest(info, gguf, sha256, args.name, default_args, source, runtime.info),
            progress.update, sidecar=sidecar, projector=projector, draft=carried_draft)
        progress.done()
    if runtime.target == host_target():
        check_default_args(result.path, default_args)
    report(result)
    print(output, file=sys.stdout)
    return output


def report(result: BundleResult) -> None:
    if result.sidecar:
        log.info(messages.SIDECAR_WRITTEN.format(path=result.path, weights=result.sidecar))
    log.info("wrote %s: %.1f MB (runtime %.1f MB + weights %.1f MB), sha256 of the weights %s", result.path,
             result.size / 1e6, (result.size - (0 if result.sidecar else result.gguf_length)) / 1e6,
             result.gguf_length / 1e6, result.gguf_sha256[:16])
