"""`llmpack`: build, inspect and unpack executables, and run the runtime on loose weights."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Callable, Sequence

from . import __version__, messages
from .errors import BuildError

log = logging.getLogger("llmpack")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise BuildError(f"error: {message} (see llmpack {self.prog.split()[-1]} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="llmpack", description=__doc__)
    parser.add_argument("--version", action="version", version=f"llmpack {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    build = sub.add_parser("build", help="bundle GGUF weights and the runtime into one executable")
    build.add_argument("gguf", nargs="?", help="the GGUF weights (a split GGUF: its first part)")
    build.add_argument("--hf-repo", metavar="OWNER/NAME", help="take the weights from this Hugging Face repository")
    build.add_argument("--hf-file", metavar="FILE", help="the GGUF file in --hf-repo (a split GGUF: its first part)")
    build.add_argument("--revision", metavar="REV", help="branch, tag or commit of --hf-repo (default: main)")
    build.add_argument("-o", "--output", help="the executable to write (default: the GGUF's name with .llmpack)")
    build.add_argument("--args", default="", metavar="ARGS",
                       help="default arguments, shell-quoted; a '...' marks where the user's go (default: at the end)")
    build.add_argument("--name", help="the model's name in the manifest (default: the GGUF's general.name)")
    build.add_argument("--runtime", type=Path, help="a prebuilt runtime executable (default: freeze one, cached)")
    build.add_argument("--rebuild-runtime", action="store_true", help="freeze the runtime again even if cached")
    build.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")

    inspect = sub.add_parser("inspect", help="show what an executable contains")
    inspect.add_argument("bundle")
    inspect.add_argument("--json", action="store_true", help="machine-readable output")
    inspect.add_argument("--verify", action="store_true", help="re-hash the weights against their sha256")

    unpack = sub.add_parser("unpack", help="extract the weights, byte-identical to the GGUF that was bundled")
    unpack.add_argument("bundle")
    unpack.add_argument("-o", "--output", required=True, help="the GGUF file to write")

    run = sub.add_parser("run", help="the runtime on loose weights, no bundling (runtime flags follow)",
                         add_help=False)
    run.add_argument("runtime_args", nargs=argparse.REMAINDER)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["run"]:
        return _run_runtime(argv[1:])  # every flag belongs to the runtime, --help included
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("llmpack: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    try:
        args = build_parser().parse_args(argv)
        if getattr(args, "quiet", False):
            logging.getLogger().setLevel(logging.WARNING)
        return COMMANDS[args.command](args)
    except BuildError as exc:
        if os.environ.get("LLMPACK_DEBUG"):
            traceback.print_exc()
        print(str(exc), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(messages.INTERRUPTED, file=sys.stderr)
        return 130


def _build(args: argparse.Namespace) -> int:
    from .build_command import build

    build(args)
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from .inspect_command import inspect

    return inspect(args.bundle, as_json=args.json, verify=args.verify)


def _unpack(args: argparse.Namespace) -> int:
    from .inspect_command import unpack

    unpack(args.bundle, Path(args.output))
    return 0


def _run_runtime(runtime_args: list[str]) -> int:
    """Runs the runtime from source in this Python (`python -m llmpack.runtime`). A separate process,
    so the build side never imports the runtime: their only contract is the payload format."""
    command = [sys.executable, "-m", "llmpack.runtime", *runtime_args]
    if os.name == "posix":
        os.execv(sys.executable, command)
    import subprocess

    return subprocess.call(command)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "build": _build,
    "inspect": _inspect,
    "unpack": _unpack,
}

if __name__ == "__main__":
    sys.exit(main())

