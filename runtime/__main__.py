"""Entry point of the runtime (`python -m llmpack.runtime`, and the frozen executable)."""

from __future__ import annotations

import logging
import os
import sys
import traceback
from typing import TYPE_CHECKING, Callable, NoReturn, Sequence

from . import messages
from .errors import EdgeFormatter, UserError, debug_requested, error_line, user_line
from .flags.settings import Settings, parse_args
from .flags.stored_args import PLACEHOLDER, merge_arguments, stored_arguments
from .bundle.payload_format import Payload, embedded_payload

if TYPE_CHECKING:
    from .plan import Plan

log = logging.getLogger("llmpack")

# A mode gets the resolved plan (runtime/plan.py) and the embedded payload (None when unbundled) and
# loads the engine itself: the server, for one, must answer /health while the weights load.
ModeRunner = Callable[["Plan", "Payload | None"], int]


def _cli(plan: Plan, payload: Payload | None) -> int:
    from .cli import mode as cli_mode

    return cli_mode.run(plan, payload)


def _chat(plan: Plan, payload: Payload | None) -> int:
    from .chat import mode as chat_mode

    return chat_mode.run(plan, payload)


def _server(plan: Plan, payload: Payload | None) -> int:
    from .server import mode as server_mode

    return server_mode.run(plan, payload)


def _default(plan: Plan, payload: Payload | None) -> int:
    from .chat import mode as chat_mode

    return chat_mode.run_default(plan, payload)


def _rpc_worker(plan: Plan, payload: Payload | None) -> int:
    from .rpc import worker as rpc_worker

    return rpc_worker.run(plan, payload)


def _list_devices(plan: Plan, payload: Payload | None) -> int:
    from .about import device_list

    return device_list.run(plan, payload)


# Explicit dispatch (no string imports: PyInstaller must see every module). Modes are imported when
# chosen, so --cli never pays for importing the server or the chat's terminal toolkit.
MODES: dict[str, ModeRunner] = {"cli": _cli, "chat": _chat, "server": _server, "default": _default,
                                "rpc_server": _rpc_worker, "list_devices": _list_devices}


def configure_logging(settings: Settings) -> None:
    from .errors import UsageError

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(EdgeFormatter("llmpack: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    level = logging.DEBUG if settings.verbose else logging.INFO
    if settings.log_disable:
        handler.setLevel(logging.CRITICAL + 1)
    if settings.log_file:
        # Appended, as llama.cpp's --log-file; with a time on each line, as a file outlives the run.
        try:
            log_file = logging.FileHandler(settings.log_file, mode="a", encoding="utf-8")
        except OSError as exc:
            raise UsageError(messages.LOG_FILE_UNWRITABLE.format(path=settings.log_file,
                                                                 reason=exc.strerror or str(exc))) from None
        log_file.setFormatter(EdgeFormatter("%(asctime)s llmpack: %(message)s"))
        root.addHandler(log_file)
    # Nothing to write anywhere: records are not even made.
    root.setLevel(logging.CRITICAL + 1 if settings.log_disable and not settings.log_file else level)


def pick_mode(settings: Settings) -> str:
    if settings.mode:
        return settings.mode
    if settings.prompt is not None or settings.file is not None:
        return "cli"  # llamafile: a prompt without a mode flag means one-shot completion
    if not _stdin_is_terminal():
        # As llamafile without a terminal: serve, never sit waiting for keys that cannot come.
        log.info(messages.CHAT_NEEDS_TERMINAL)
        return "server"
    return "default"


def _stdin_is_terminal() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, ValueError):  # closed or replaced stdin
        return False


class _Edge:
    """What main() knows when an error reaches it: --verbose, once the flags have parsed; and, for run(),
    whether this start was a one-shot answer (--cli, --help, --version)."""

    verbose = False
    one_shot = False


def _clean_cache(payload: Payload | None) -> int:
    from .bundle.user_cache import KEY_LENGTH, clean_runtimes

    keep = payload.runtime[2][:KEY_LENGTH] if payload is not None else None
    for removed in clean_runtimes(keep):
        print(messages.CACHE_ENTRY_REMOVED.format(path=removed), file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None, edge: _Edge | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    edge = edge or _Edge()
    try:
        return _main(argv, edge)
    except UserError as exc:
        if edge.verbose or debug_requested():
            traceback.print_exc()
        print(user_line(exc), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(messages.INTERRUPTED, file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: one line for users, the traceback with --verbose or LLMPACK_DEBUG=1
        if edge.verbose or debug_requested():
            traceback.print_exc()
        print(error_line(messages.INTERNAL_ERROR_AT_EXIT.format(kind=type(exc).__name__, detail=exc)), file=sys.stderr)
        return 70


def _main(argv: list[str], edge: _Edge) -> int:
    payload = embedded_payload()
    stored = stored_arguments(payload.manifest) if payload else []
    # Parsed before --help and --version answer: `llmpack build` runs --version to reject bad stored args.
    parsed = parse_args(merge_arguments(stored, argv))
    edge.verbose = parsed.settings.verbose  # a flag the user gave, or one stored in the executable
    edge.one_shot = parsed.show_help or parsed.show_version
    if parsed.show_help:
        # The defaults this executable really has: the schema's, as its stored arguments change them.
        defaults = parse_args([arg for arg in stored if arg != PLACEHOLDER]).settings
        # Imported here only: the man page's tables (and importlib.resources) serve --help alone.
        from .about.help_page import render_help

        sys.stdout.write(render_help(payload, stored, defaults))
        return 0
    if parsed.show_version:
        from .about.version_info import version_lines

        sys.stdout.write("".join(f"{line}\n" for line in version_lines(payload)))
        return 0
    settings = parsed.settings
    if settings.clean_cache:
        return _clean_cache(payload)
    configure_logging(settings)
    mode = pick_mode(settings)
    from .engine.native import route_native_logs
    from .plan import resolve

    # llama.cpp is chatty: its errors only, unless --verbose asks for everything (from here: --rpc
    # loads the backends and connects to its workers while the plan is resolved).
    route_native_logs(2 if settings.verbose else 4)
    # Every flag checked (a refused --grammar exits 2) before the weights load; the executable names the model.
    plan = resolve(settings, mode, payload.executable if payload is not None else None)
    edge.one_shot = mode in ("cli", "list_devices")
    return MODES[mode](plan, payload)


def run() -> NoReturn:
    """The process's entry (`python -m llmpack.runtime`, and the frozen runtime's entry script)."""
    edge = _Edge()
    code = main(None, edge)
    if edge.one_shot and sys.getprofile() is None and sys.gettrace() is None:
        # Everything is written: the interpreter's teardown (each module, then llama.cpp's libraries,
        # unloaded one by one) would only delay the script that calls us once per line, by 10-25 ms
        # measured. Not after the chat or the server, whose libraries may still have work at exit.
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (AttributeError, OSError, ValueError):  # no stream, or a reader gone
                pass
        logging.shutdown()  # a --log-file flushed and closed, as at a normal exit
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    run()
