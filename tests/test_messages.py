"""Messages are constants without their "error: " prefix; the printers at the edge add it, and LLMPACK_DEBUG
(or the runtime's parsed --verbose) adds a traceback. Checked on the sources, on the printers in-process,
and on the real commands."""

from __future__ import annotations

import io
import logging
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest
from llmpack.bundler import messages as bundler_messages
from llmpack.runtime import messages as runtime_messages
from llmpack.runtime.chat.render import Console
from llmpack.runtime.chat.session import DoesNotFit
from llmpack.runtime.errors import EdgeFormatter, UserError, user_line
from support.commands import REPO, error_line, llmpack, one_error_line, run, warning_line

PACKAGES = {"runtime": runtime_messages, "bundler": bundler_messages}
# The one module per package that holds the prefix the printers add.
PREFIX_HOLDERS = {Path("runtime/errors.py"), Path("bundler/errors.py")}
PREFIXED_LITERAL = re.compile(r"""(?:^|[^\w])[rbfRBF]?["'](?:error|warning): """)


def sources(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def constants(module: ModuleType) -> dict[str, str]:
    return {name: value for name, value in vars(module).items() if name.isupper() and isinstance(value, str)}


@pytest.mark.parametrize("package", PACKAGES)
def test_no_prefixed_literal_outside_the_printers(package: str) -> None:
    offenders = []
    for path in sources(package):
        if path.relative_to(REPO) in PREFIX_HOLDERS:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if PREFIXED_LITERAL.search(line) or 'removeprefix("error' in line or "removeprefix('error" in line:
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert offenders == [], "\n".join(offenders)


@pytest.mark.parametrize("package", PACKAGES)
def test_messages_are_stored_without_a_prefix(package: str) -> None:
    prefixed = [name for name, text in constants(PACKAGES[package]).items()
                if text.startswith(("error:", "warning:"))]
    assert prefixed == []


@pytest.mark.parametrize("package", PACKAGES)
def test_every_message_is_used(package: str) -> None:
    module = PACKAGES[package]
    others = "\n".join(path.read_text(encoding="utf-8") for path in sources(package)
                       if path.name != "messages.py" or path.parent.name != package)
    own = Path(module.__file__).read_text(encoding="utf-8")
    unused = []
    for name in constants(module):
        # A constant another constant is built from counts as used (INTERNAL_ERROR_AT_EXIT).
        if not re.search(rf"\b{name}\b", others) and len(re.findall(rf"\b{name}\b", own)) < 2:
            unused.append(name)
    assert unused == []


def test_the_printers_add_the_prefix_once() -> None:
    assert user_line(UserError(runtime_messages.NO_PROMPT)) == "error: " + runtime_messages.NO_PROMPT
    # "context full: ..." is a notice the chat goes on after, not an error.
    notice = runtime_messages.CHAT_MESSAGE_TOO_LONG.format(n_tokens=9, n_ctx=8)
    assert user_line(DoesNotFit(notice)) == notice
    out = io.StringIO()
    Console(out, color=False).error(runtime_messages.CHAT_NOT_TEXT.format(path="x.bin"))
    assert out.getvalue() == error_line(runtime_messages.CHAT_NOT_TEXT.format(path="x.bin")) + "\n"


def test_our_warnings_are_prefixed_and_other_loggers_keep_their_text() -> None:
    formatter = EdgeFormatter("llmpack: %(message)s")

    def shown(logger: str, level: int, message: str, *args: object) -> str:
        return formatter.format(logging.LogRecord(logger, level, __file__, 1, message, args, None))

    gpu = runtime_messages.GPU_UNAVAILABLE.format(n=99, backends="CPU")
    assert shown("llmpack.runtime.bundle.model_loader", logging.WARNING, gpu) == "llmpack: " + warning_line(gpu)
    assert shown("llmpack.runtime.chat.mode", logging.WARNING, "%s", "x") == "llmpack: warning: x"
    assert shown("llmpack.runtime.server.mode", logging.INFO, runtime_messages.SERVER_STOPPED) == \
        "llmpack: " + runtime_messages.SERVER_STOPPED
    assert shown("llama.cpp", logging.WARNING, "n_ctx_seq < n_ctx_train") == "llmpack: n_ctx_seq < n_ctx_train"
    assert shown("uvicorn.error", logging.WARNING, "Invalid HTTP request") == "llmpack: Invalid HTTP request"


# -- the debug switch, on the real commands ----------------------------------------------------------

def runtime(*args: str, env: dict[str, str] | None = None):
    """The runtime from source, as `llmpack run` starts it (no bundle: -m names the weights)."""
    return run([sys.executable, "-m", "llmpack.runtime", *args], env={"LLMPACK_DEBUG": "", **(env or {})}, timeout=60)


def test_a_bad_flag_is_one_line_and_llmpack_debug_adds_the_traceback() -> None:
    expected = error_line(runtime_messages.UNKNOWN_FLAG.format(arg="--bogus"))
    plain = runtime("--bogus")
    assert one_error_line(plain) == expected and plain.returncode == 2
    # A flag that does not parse: no settings exist yet, so only the variable can ask for the traceback.
    debug = runtime("--bogus", "--verbose", env={"LLMPACK_DEBUG": "1"})
    assert debug.returncode == 2 and "Traceback" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1] == expected


def test_verbose_is_read_from_the_parsed_flags(tmp_path: Path) -> None:
    missing = tmp_path / "missing.gguf"
    expected = error_line(runtime_messages.MODEL_UNREADABLE.format(path=missing, reason="No such file or directory"))
    verbose = runtime("-m", str(missing), "--cli", "-n", "1", "--verbose", "-p", "hi")
    assert verbose.returncode == 1 and "Traceback" in verbose.stderr
    assert verbose.stderr.strip().splitlines()[-1] == expected
    # "--verbose" as the prompt's text is no flag (a scan of the raw arguments took it for one).
    as_prompt = runtime("-m", str(missing), "--cli", "-n", "1", "--log-disable", "-p", "--verbose")
    assert one_error_line(as_prompt) == expected


def test_the_bundled_executable_honours_llmpack_debug(tiny_bundle: Path, tmp_path: Path) -> None:
    missing = tmp_path / "missing.gguf"
    args = [str(tiny_bundle), "-m", str(missing), "--cli", "-p", "hi", "--log-disable"]
    expected = error_line(runtime_messages.MODEL_UNREADABLE.format(path=missing, reason="No such file or directory"))
    assert one_error_line(run(args, env={"LLMPACK_DEBUG": ""})) == expected
    debug = run(args, env={"LLMPACK_DEBUG": "1"})
    assert debug.returncode == 1 and "Traceback" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1] == expected


def test_llmpack_prefixes_its_errors_and_llmpack_debug_adds_the_traceback(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not weights")
    expected = error_line(bundler_messages.NOT_A_GGUF.format(path=text))
    assert one_error_line(llmpack("build", str(text), env={"LLMPACK_DEBUG": ""})) == expected
    debug = llmpack("build", str(text), env={"LLMPACK_DEBUG": "1"})
    assert debug.returncode == 1 and "Traceback" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1] == expected
    usage = llmpack("inspect")
    assert one_error_line(usage) == error_line(bundler_messages.USAGE.format(
        message="the following arguments are required: bundle", command="inspect"))
