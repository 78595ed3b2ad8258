"""Running commands as a user would (llmpack, built executables), and the one-line error check."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
LLMPACK = str(VENV_BIN / "llmpack")
# The frozen runtime is cached by content hash, so sharing it between test runs (and clones) is safe and
# saves a minute per run. It lives in the user's cache, outside the checkout, whose tree the tests leave as
# they found it (conftest.py checks); everything else a test writes goes to its tmp_path.
TEST_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llmpack" / "tests"


def run(command: list[str], *, input: bytes | str | None = None, timeout: float = 180,
        env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Runs a command as a user would, capturing text output."""
    text = not isinstance(input, bytes)
    return subprocess.run(command, input=input, capture_output=True, text=text, timeout=timeout,
                          env=None if env is None else {**os.environ, **env}, cwd=cwd,
                          stdin=None if input is not None else subprocess.DEVNULL)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """Asserts a failure reported as users should see it: non-zero, one stderr line, no traceback."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def error_line(message: str) -> str:
    """A messages constant as a user sees it on stderr or in the chat: messages are stored without the
    prefix that the edge (main(), the chat's console) adds."""
    return "error: " + message


def warning_line(message: str) -> str:
    return "warning: " + message


def llmpack(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return run([LLMPACK, *args], **kwargs)


def build_bundle(gguf: Path, output: Path, *extra: str) -> Path:
    result = llmpack("build", str(gguf), "-o", str(output), *extra)
    assert result.returncode == 0, result.stderr
    return output
