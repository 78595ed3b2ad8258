"""A `llmpack build`, `repack` or `unpack` ended by SIGTERM (kill, a stopped service) or SIGHUP (a closed
terminal) cleans up as Ctrl-C does: one line on stderr, exit status 128 + the signal, and no
`.partial` file the size of the weights left in the output folder."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from llmpack.bundler import messages
from support.commands import LLMPACK, build_bundle
from support.tiny_model import write_big_gguf

pytestmark = pytest.mark.slow

# Copying and hashing 1 GiB takes about a second here: far longer than the 10 ms between looks.
SIZE = 1 << 30


@pytest.fixture(scope="module")
def big_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_big_gguf(tmp_path_factory.mktemp("big") / "big.gguf", SIZE)  # sparse: cheap on disk


@pytest.fixture(scope="module")
def big_bundle(big_gguf: Path, tiny_bundle: Path) -> Path:
    # tiny_bundle first: the runtime is frozen (and cached) before anything is timed.
    return build_bundle(big_gguf, big_gguf.with_suffix(".llmpack"), "-q")


def signals_at_defaults() -> None:
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


def test_a_build_started_with_sighup_ignored_keeps_it_ignored(big_gguf: Path, tiny_bundle: Path, tmp_path: Path) -> None:
    """nohup's promise: a SIGHUP does not end the build, which writes its file."""
    out = tmp_path / "big.llmpack"
    result = signalled([LLMPACK, "build", str(big_gguf), "-o", str(out), "-q"], tmp_path, signal.SIGHUP,
                       preexec=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    assert result.returncode == 0, result.stderr
    assert out.stat().st_size > SIZE and not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def signalled(command: list[str], out_dir: Path, signum: int,
              preexec: Callable[[], None] = signals_at_defaults) -> subprocess.CompletedProcess:
    """Runs `command`, sends it `signum` once a `.partial` file appears in `out_dir` (the weights are
    being written), and returns how it ended. By default the child starts with the signals at their
    defaults, as a terminal leaves them: a suite run under nohup ignores SIGHUP, and llmpack keeps a
    signal ignored by whoever started it (bundler/signals.py)."""
    child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, preexec_fn=preexec)
    deadline = time.monotonic() + 300  # a runtime freeze may come first
    while not any(p.name.endswith(".partial") for p in out_dir.iterdir()):
        if child.poll() is not None or time.monotonic() > deadline:
            child.kill()
            pytest.fail(f"no .partial file seen; exit {child.poll()}: {child.communicate()[1]}")
        time.sleep(0.01)
    child.send_signal(signum)
    stdout, stderr = child.communicate(timeout=120)
    return subprocess.CompletedProcess(command, child.returncode, stdout, stderr)


def assert_cleaned_up(result: subprocess.CompletedProcess, signum: int, out_dir: Path) -> None:
    assert result.returncode == 128 + signum, result.stderr
    assert result.stderr.splitlines() == [messages.TERMINATED.format(signal=signal.Signals(signum).name)]
    assert result.stdout == ""
    assert list(out_dir.iterdir()) == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_signalled_build_leaves_nothing(big_gguf: Path, tiny_bundle: Path, tmp_path: Path, signum: int) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = signalled([LLMPACK, "build", str(big_gguf), "-o", str(out_dir / "big.llmpack"), "-q"], out_dir, signum)
    assert_cleaned_up(result, signum, out_dir)


def test_a_signalled_repack_leaves_nothing(big_bundle: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    command = [LLMPACK, "repack", str(big_bundle), "--args=-c 512", "-o", str(out_dir / "new.llmpack"), "-q"]
    assert_cleaned_up(signalled(command, out_dir, signal.SIGTERM), signal.SIGTERM, out_dir)


def test_a_signalled_unpack_leaves_nothing(big_bundle: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    command = [LLMPACK, "unpack", str(big_bundle), "-o", str(out_dir / "big.gguf")]
    assert_cleaned_up(signalled(command, out_dir, signal.SIGHUP), signal.SIGHUP, out_dir)
