"""Shared fixtures: a tiny real GGUF, and real executables built from it with the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tiny_model import write_tiny_gguf

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
LLMPACK = str(VENV_BIN / "llmpack")
# The frozen runtime is cached by content hash, so sharing it between test runs is safe and saves
# a minute per run; everything else a test writes goes to its tmp_path.
TEST_CACHE = REPO / ".cache" / "test-llmpack"


@pytest.fixture(autouse=True, scope="session")
def isolated_user_state(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("home")
    saved = dict(os.environ)
    os.environ.update(LLMPACK_CACHE=str(TEST_CACHE), HF_HOME=str(home / "hf"),
                      LLMPACK_HISTORY=str(home / "history"), NO_COLOR="1")
    yield
    os.environ.clear()
    os.environ.update(saved)


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


def llmpack(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return run([LLMPACK, *args], **kwargs)


def build_bundle(gguf: Path, output: Path, *extra: str) -> Path:
    result = llmpack("build", str(gguf), "-o", str(output), *extra)
    assert result.returncode == 0, result.stderr
    return output


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("models") / "tiny.gguf")


@pytest.fixture(scope="session")
def other_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same shape as tiny_gguf, other random weights: a different model to override with -m."""
    return write_tiny_gguf(tmp_path_factory.mktemp("models") / "other.gguf", seed=1, name="other-model")


@pytest.fixture(scope="session")
def tiny_bundle(tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bundle(tiny_gguf, tmp_path_factory.mktemp("bundles") / "tiny.llmpack")
