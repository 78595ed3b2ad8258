"""`llmpack`: build, inspect and unpack executables, and run the runtime on loose weights."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Callable, Sequence

from . import __version__, messages
from .errors import BuildError, debug_requested, error_line
from .signals import Terminated, terminate_as_exception

log = logging.getLogger("llmpack")


EXAMPLES = {
    "llmpack": """\
examples:
  llmpack build model.gguf -o model.llmpack            # one executable, weights inside
  ./model.llmpack                                      # chat in the terminal, API server in the background
  llmpack inspect model.llmpack --verify               # what is inside; re-hash the weights
  llmpack unpack model.llmpack -o model.gguf           # the weights back, byte-identical
  llmpack run -m model.gguf --cli -p hi                # the runtime on loose weights, no bundling

'llmpack COMMAND --help' describes each command.""",
    "build": """\
examples:
  llmpack build model.gguf -o model.llmpack
  llmpack build model.gguf --args '-c 8192 --temp 0.7'      # default arguments; the user's come after
  llmpack build model.gguf --args '--server --port 8081'    # an executable that serves by default
  llmpack build --hf-repo bartowski/gemma-2-2b-it-GGUF --hf-file gemma-2-2b-it-Q6_K.gguf
  llmpack build model-f16.gguf --quantize Q4_K_M -o model.llmpack
  llmpack build model.gguf --target linux-aarch64 --runtime-dir DIR""",
    "repack": """\
examples:
  llmpack repack model.llmpack --rebuild-runtime            # this llmpack's runtime, same weights
  llmpack repack model.llmpack --runtime-dir DIR            # a runtime built elsewhere
  llmpack repack model.llmpack --model new.gguf -o new.llmpack
  llmpack repack model.llmpack --args '-c 4096'             # new default arguments""",
    "runtime": """\
examples:
  llmpack runtime                                           # freeze (once) and print its path
  llmpack runtime -o runtimes/linux-x86_64                  # with runtime.json, for --runtime-dir""",
    "inspect": """\
examples:
  llmpack inspect model.llmpack
  llmpack inspect model.llmpack --json | jq .manifest.model
  llmpack inspect model.llmpack --verify                    # exit status 1 if the weights are damaged""",
    "unpack": """\
examples:
  llmpack unpack model.llmpack -o model.gguf
  llmpack unpack model.llmpack -o model.gguf && sha256sum model.gguf""",
}


def _help(name: str) -> dict[str, object]:
    return {"epilog": EXAMPLES[name], "formatter_class": argparse.RawDescriptionHelpFormatter}


def join_args_value(argv: list[str]) -> list[str]:
    """`--args VALUE` as `--args=VALUE`: the word after --args is always its value, but argparse takes
    one that starts with '-' (`--args '--server'`) for an option and fails with 'expected one argument'."""
    joined: list[str] = []
    words = iter(argv)
    for word in words:
        if word == "--":
            joined += [word, *words]
            break
        value = next(words, None) if word == "--args" else None
        joined.append(word if value is None else f"--args={value}")
    return joined


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise BuildError(messages.USAGE.format(message=message, command=self.prog.split()[-1]))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="llmpack", description=__doc__, **_help("llmpack"))
    parser.add_argument("--version", action="version", version=f"llmpack {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    build = sub.add_parser("build", help="bundle GGUF weights and the runtime into one executable",
                           **_help("build"))
    build.add_argument("gguf", nargs="?", help="the GGUF weights (a split GGUF: its first part)")
    build.add_argument("--hf-repo", metavar="OWNER/NAME", help="take the weights from this Hugging Face repository")
    build.add_argument("--hf-file", metavar="FILE", help="the GGUF file in --hf-repo (a split GGUF: its first part)")
    build.add_argument("--revision", metavar="REV", help="branch, tag or commit of --hf-repo (default: main)")
    build.add_argument("-o", "--output", help="the executable to write (default: the GGUF's name with .llmpack)")
    build.add_argument("--args", default="", metavar="ARGS",
                       help="default arguments, shell-quoted; a '...' marks where the user's go (default: at the end)")
    build.add_argument("--name", help="the model's name in the manifest (default: the GGUF's general.name)")
    build.add_argument("--quantize", metavar="TYPE", help="quantize an F32/F16/BF16 GGUF first: Q4_K_M, Q5_K_M, Q6_K, Q8_0, ...")
    build.add_argument("--force-quantize", action="store_true", help="re-quantize an already quantized GGUF")
    _runtime_options(build)
    build.add_argument("--sidecar", action="store_true",
                       help="write the weights beside the executable (automatic over 4 GB for Windows and macOS)")
    build.add_argument("--mmproj", metavar="GGUF", help="a multimodal projector (llama.cpp's mmproj-*.gguf) to carry: "
                       "images and audio in (from the hub: the repository's is found unless --no-mmproj)")
    build.add_argument("--mmproj-file", metavar="FILE", help="the projector's file in --hf-repo (default: llama-server's -hf choice)")
    build.add_argument("--no-mmproj", action="store_true", help="carry no projector: text only")
    build.add_argument("--draft", metavar="GGUF", help="a draft model to carry (a smaller model of the same vocabulary): "
                       "speculative decoding, as llama-server's -md, used by every start unless -md or -m says otherwise")
    build.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")

    repack = sub.add_parser("repack", help="rewrite an executable with a new runtime or new weights, keeping the rest",
                            **_help("repack"))
    repack.add_argument("bundle", help="the executable to start from")
    repack.add_argument("--model", type=Path, metavar="GGUF", help="new weights (same runtime and default arguments)")
    repack.add_argument("-o", "--output", help="where to write (default: replace BUNDLE)")
    repack.add_argument("--args", metavar="ARGS", help="new default arguments (default: keep)")
    repack.add_argument("--mmproj", type=Path, metavar="GGUF", help="a new projector (default: keep the carried one)")
    repack.add_argument("--no-mmproj", action="store_true", help="leave the carried projector out")
    repack.add_argument("--draft", type=Path, metavar="GGUF", help="a new draft model (default: keep the carried one)")
    repack.add_argument("--no-draft", action="store_true", help="leave the carried draft model out")
    _runtime_options(repack)
    repack.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")

    runtime = sub.add_parser("runtime", help="freeze this machine's runtime (cached) and print its path",
                             **_help("runtime"))
    runtime.add_argument("-o", "--output-dir", type=Path, help="also copy it with its runtime.json into this folder")
    runtime.add_argument("--rebuild-runtime", action="store_true", help="freeze again even if cached")
    _gpu_option(runtime)

    inspect = sub.add_parser("inspect", help="show what an executable contains",
                             **_help("inspect"))
    inspect.add_argument("bundle")
    inspect.add_argument("--json", action="store_true", help="machine-readable output")
    inspect.add_argument("--verify", action="store_true", help="re-hash the weights against their sha256")

    unpack = sub.add_parser("unpack", help="extract the weights, byte-identical to the GGUF that was bundled",
                            **_help("unpack"))
    unpack.add_argument("bundle")
    unpack.add_argument("-o", "--output", required=True, help="the GGUF file to write")
    unpack.add_argument("--mmproj", type=Path, metavar="GGUF", help="also write the carried projector to this file")
    unpack.add_argument("--draft", type=Path, metavar="GGUF", help="also write the carried draft model to this file")

    run = sub.add_parser("run", help="the runtime on loose weights, no bundling (runtime flags follow)",
                         add_help=False)
    run.add_argument("runtime_args", nargs=argparse.REMAINDER)
    return parser


def _runtime_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runtime", "--runtime-dir", dest="runtime", type=Path, metavar="PATH",
                        help="a runtime built elsewhere: its executable, or a folder with it and runtime.json "
                             "(default: this machine's, frozen once and cached)")
    parser.add_argument("--target", metavar="OS-ARCH",
                        help="the target the runtime is for: linux-x86_64, linux-aarch64, darwin-arm64, windows-x86_64")
    parser.add_argument("--rebuild-runtime", action="store_true", help="freeze the runtime again even if cached")
    _gpu_option(parser)


def _gpu_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gpu", metavar="vulkan,cuda|none",
                        help="the GPU backends the executable carries, each loaded at start where its driver is "
                             "(default: vulkan, where it was built; none: the CPU only, a smaller file)")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["run"]:
        return _run_runtime(argv[1:])  # every flag belongs to the runtime, --help included
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("llmpack: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    try:
        with terminate_as_exception():
            args = build_parser().parse_args(join_args_value(argv))
            if getattr(args, "quiet", False):
                logging.getLogger().setLevel(logging.WARNING)
            return COMMANDS[args.command](args)
    except Terminated as exc:  # SIGTERM, SIGHUP: cleaned up on the way here, as for Ctrl-C
        with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone
            print(messages.TERMINATED.format(signal=exc.name), file=sys.stderr)
        return exc.exit_code
    except BuildError as exc:
        if debug_requested():
            traceback.print_exc()
        print(error_line(str(exc)), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(messages.INTERRUPTED, file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: one line for users, the traceback with LLMPACK_DEBUG=1
        if debug_requested():
            traceback.print_exc()
        print(error_line(messages.INTERNAL_ERROR.format(kind=type(exc).__name__, detail=exc)), file=sys.stderr)
        return 70


def _build(args: argparse.Namespace) -> int:
    from .build_command import build
    from .options import BuildOptions, from_namespace

    build(from_namespace(BuildOptions, args))
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from .inspect_command import inspect

    return inspect(args.bundle, as_json=args.json, verify=args.verify)


def _unpack(args: argparse.Namespace) -> int:
    from .inspect_command import unpack

    unpack(args.bundle, Path(args.output), args.mmproj, args.draft)
    return 0


def _repack(args: argparse.Namespace) -> int:
    from .options import RepackOptions, from_namespace
    from .repack_command import repack

    repack(from_namespace(RepackOptions, args))
    return 0


def _runtime(args: argparse.Namespace) -> int:
    from .runtime_build import export_runtime

    print(export_runtime(args.output_dir, args.rebuild_runtime, args.gpu))
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
    "repack": _repack,
    "runtime": _runtime,
}

if __name__ == "__main__":
    sys.exit(main())

