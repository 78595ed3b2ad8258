"""`--cli` on a terminal: the completion rarely ends with a newline, and the stats log line goes to
stderr, the same terminal: it must start a line of its own, not continue the completion's last word."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def on_a_terminal(command: list[str]) -> str:
    """Runs `command` with stdout and stderr on one pseudo-terminal; returns what it showed."""
    controller, terminal = os.openpty()
    child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal)
    os.close(terminal)
    shown = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(controller)
    assert child.wait(timeout=120) == 0, shown
    return shown.decode("utf-8", "replace").replace("\r\n", "\n")


def test_the_stats_start_on_their_own_line(tiny_bundle: Path) -> None:
    shown = on_a_terminal([str(tiny_bundle), "--cli", "-p", "the cat", "-n", "6", "--temp", "0", "-t", "1"])
    lines = shown.split("\n")
    (at,) = [i for i, line in enumerate(lines) if re.search(r"llmpack: \d+ tokens in ", line)]
    assert lines[at].startswith("llmpack: "), shown
    assert lines[at - 1].startswith("the cat") and len(lines[at - 1]) > len("the cat"), shown  # the completion


def test_no_extra_line_when_stdout_is_not_the_terminal(tiny_bundle: Path) -> None:
    # stdout to a file: it carries the model's output only, and stderr's stats need no new line.
    result = subprocess.run([str(tiny_bundle), "--cli", "-p", "the cat", "-n", "6", "--temp", "0", "-t", "1"],
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^llmpack: \d+ tokens in ", result.stderr, re.MULTILINE)
    assert "" not in result.stderr.splitlines()
