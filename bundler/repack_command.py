"""`llmpack repack`: an executable with a new runtime (same weights) or new weights (same runtime),
its manifest and default arguments kept, as llamafile's upgrade tool does."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from . import draft, messages, mmproj
from .build_command import make_manifest, parse_default_args, report
from .bundle import Weights, read_runtime, write_bundle
from .errors import BuildError
from .gguf_info import read_gguf_info
from .layout import runtime_image
from .options import RepackOptions
from .payload_format import FLAG_SIDECAR, read_bundle, weights_path
from .progress import ByteProgress
from .runtime_build import host_target
from .smoke import check_default_args
from .targets import select_runtime, wants_sidecar

log = logging.getLogger(__name__)


def repack(args: RepackOptions) -> Path:
    old = read_bundle(args.bundle)
    if (args.model is None and args.runtime is None and not args.rebuild_runtime and args.args is None and args.gpu is None
            and args.mmproj is None and not args.no_mmproj and args.draft is None and not args.no_draft):
        raise BuildError(messages.REPACK_NOTHING)
    output = Path(args.output or args.bundle)
    manifest = dict(old.manifest)
    default_args = parse_default_args(args.args) if args.args is not None else list(manifest.get("default_args", []))
    sidecar_flag = bool(old.flags & FLAG_SIDECAR)

    if args.runtime is not None or args.rebuild_runtime or args.gpu is not None:
        runtime = select_runtime(args.runtime, args.target, args.rebuild_runtime, args.gpu)
        image, runtime_info = read_runtime(runtime.path), runtime.info
    else:
        image, runtime_info = runtime_image(old), manifest.get("runtime", {})

    if args.model is not None:
        info = read_gguf_info(str(args.model))
        weights = Weights(args.model)
        source = {"type": "file", "file": args.model.name}
        build_manifest = lambda sha: make_manifest(info, args.model, sha, None, default_args, source, runtime_info)  # noqa: E731
    else:
        weights = Weights(weights_path(old), old.gguf_offset, old.gguf_length)

        def build_manifest(sha: str) -> dict:
            kept = {k: v for k, v in manifest.items() if k not in ("mmproj", draft.KEY)}  # written again: new places
            return {**kept, "default_args": default_args, "runtime": runtime_info}

    target = str(runtime_info.get("target", host_target()))
    sidecar = sidecar_flag or wants_sidecar(target, weights.size, False)
    progress = ByteProgress("repacking weights", enabled=not args.quiet)
    projector = None if args.no_mmproj else mmproj.local_projector(args.mmproj) if args.mmproj else mmproj.carried(old)
    carried_draft = None if args.no_draft else draft.local_draft(args.draft) if args.draft else draft.carried(old)
    result = write_bundle(image, weights, output, build_manifest, progress.update, sidecar=sidecar, projector=projector,
                          draft=carried_draft)
    progress.done()
    if target == host_target():
        check_default_args(result.path, default_args, remove=output.resolve() != Path(args.bundle).resolve())
    report(result)
    print(output, file=sys.stdout)
    return output

