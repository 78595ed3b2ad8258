"""Entry point of the runtime (`python -m llmpack.runtime`, and the frozen executable)."""

from __future__ import annotations

import logging
import os
import sys
import traceback
from typing import Callable, Sequence

from . import __version__, messages
from .default_args import merge_arguments
from .errors import UserError
from .payload import Payload
from .settings import Settings, describe_options, parse_args

log = logging.getLogger("llmpack")

# A mode gets the settings and the embedded payload (None when unbundled) and loads the engine
# itself: the server, for one, must answer /health while the weights load.
ModeRunner = Callable[[Settings, "Payload | None"], int]


def _cli(settings: Settings, payload: Payload | None) -> int:
    from . import cli_mode

    return cli_mode.run(settings, payload)


def _chat(settings: Settings, payload: Payload | None) -> int:
    from . import chat_mode

    return chat_mode.run(settings, payload)


def _server(settings: Settings, payload: Payload | None) -> int:
    from . import server_mode

    return server_mode.run(settings, payload)


def _default(settings: Settings, payload: Payload | None) -> int:
    from . import chat_mode

    return chat_mode.run_default(settings, payload)


# Explicit dispatch (no string imports: PyInstaller must see every module). Modes are imported when
# chosen, so --cli never pays for importing the server or the chat's terminal toolkit.
MODES: dict[str, ModeRunner] = {"cli": _cli, "chat": _chat, "server": _server, "default": _default}


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("llmpack: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    if settings.log_disable:
        root.setLevel(logging.CRITICAL + 1)
    else:
        root.setLevel(logging.DEBUG if settings.verbose else logging.INFO)


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


def render_help(payload) -> str:
    from importlib.resources import files

    template = files("llmpack.templates").joinpath("help.txt").read_text(encoding="utf-8")
    program = os.path.basename(sys.argv[0]) if getattr(sys, "frozen", False) else "llmpack run"
    embedded = "no embedded weights" if payload is None else (
        f"embedded weights: {payload.manifest.get('model', {}).get('name', '?')}")
    return template.format(program=program, version=__version__, embedded=embedded,
                           options=describe_options())


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in argv
    try:
        return _main(argv)
    except UserError as exc:
        if verbose:
            traceback.print_exc()
        print(str(exc), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(messages.INTERRUPTED, file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: one line for users, the traceback with --verbose
        if verbose:
            traceback.print_exc()
        print(f"error: internal error: {type(exc).__name__}: {exc} (--verbose shows the traceback)", file=sys.stderr)
        return 70


def _main(argv: list[str]) -> int:
    from .model_loader import embedded_payload

    payload = embedded_payload()
    defaults = payload.manifest.get("default_args", []) if payload else []
    parsed = parse_args(merge_arguments(defaults, argv))
    if parsed.show_help:
        sys.stdout.write(render_help(payload))
        return 0
    if parsed.show_version:
        print(f"llmpack {__version__}")
        return 0
    settings = parsed.settings
    configure_logging(settings)
    mode = pick_mode(settings)
    from .engine import route_native_logs
    from .sampling import grammar_text

    grammar_text(settings)  # a refused --grammar exits 2 now, in every mode, before the model loads
    # llama.cpp is chatty: its errors only, unless --verbose asks for everything.
    route_native_logs(2 if settings.verbose else 4)
    return MODES[mode](settings, payload)


if __name__ == "__main__":
    sys.exit(main())
