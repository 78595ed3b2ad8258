"""A mode stored with `llmpack build --args` is a default: a mode flag the user types replaces it."""

from __future__ import annotations

from pathlib import Path

import pytest
from llmpack.runtime import messages
from llmpack.runtime.errors import UsageError
from llmpack.runtime.flags.settings import parse_args
from llmpack.runtime.flags.stored_args import merge_arguments
from support.commands import build_bundle, error_line, one_error_line, run


@pytest.mark.parametrize("stored, user, merged", [
    (["--server", "-c", "4096"], ["--cli", "-p", "hi"], ["-c", "4096", "--cli", "-p", "hi"]),
    (["--server", "...", "--nobrowser"], ["--chat"], ["--chat", "--nobrowser"]),
    (["--server", "-c", "4096"], ["-p", "hi"], ["--server", "-c", "4096", "-p", "hi"]),  # no mode typed: stored kept
    (["-c", "4096"], ["--cli"], ["-c", "4096", "--cli"]),
])
def test_a_typed_mode_replaces_the_stored_one(stored, user, merged) -> None:
    assert merge_arguments(stored, user) == merged


def test_two_typed_modes_still_conflict() -> None:
    with pytest.raises(UsageError) as raised:
        parse_args(merge_arguments(["--server"], ["--cli", "--chat"]))
    assert str(raised.value) == messages.CONFLICTING_MODES and raised.value.exit_code == 2


@pytest.mark.slow
def test_cli_on_an_executable_built_to_serve(tiny_gguf: Path, tmp_path: Path) -> None:
    bundle = build_bundle(tiny_gguf, tmp_path / "serve.llmpack", "--args=--server")
    result = run([str(bundle), "--cli", "-p", "hi", "-n", "2", "--temp", "0", "--log-disable"], timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("hi") and result.stderr == ""
    both = run([str(bundle), "--cli", "--chat", "-p", "hi"])
    assert one_error_line(both) == error_line(messages.CONFLICTING_MODES) and both.returncode == 2
