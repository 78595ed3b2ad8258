"""Interrupted or failing builds leave nothing behind: no partial executable, no temporary file."""

from __future__ import annotations

import errno
import signal
import subprocess
import time
from pathlib import Path

import pytest
from llmpack.bundler.bundle import atomic_output
from llmpack.bundler.errors import BuildError
from support.commands import LLMPACK
from support.tiny_model import write_big_gguf


@pytest.mark.slow
def test_ctrl_c_mid_build_leaves_no_output(tmp_path: Path, tiny_bundle: Path) -> None:
    big = write_big_gguf(tmp_path / "big.gguf", 3 << 30)  # 3 GiB of zeros, sparse on disk
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    child = subprocess.Popen([LLMPACK, "build", str(big), "-o", str(out_dir / "big.llmpack")],
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300  # a runtime freeze may come first
    while not any(p.name.endswith(".partial") for p in out_dir.iterdir()):  # copying has begun
        assert time.monotonic() < deadline and child.poll() is None, child.stderr.read()
        time.sleep(0.05)
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == 130
    assert stderr.strip().splitlines()[-1] == "interrupted; nothing was written"
    assert "Traceback" not in stderr
    assert list(out_dir.iterdir()) == []


def test_disk_full_is_one_line_and_removes_the_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "model.llmpack"
    with pytest.raises(BuildError) as caught:
        with atomic_output(target) as out:
            out.write(b"partial bytes")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert str(caught.value) == f"cannot write {target}: no space left on the device"
    assert list(tmp_path.iterdir()) == []


def test_success_renames_into_place_with_the_mode(tmp_path: Path) -> None:
    target = tmp_path / "model.llmpack"
    target.write_bytes(b"old")
    with atomic_output(target, mode=0o755) as out:
        out.write(b"new")
    assert target.read_bytes() == b"new" and target.stat().st_mode & 0o777 == 0o755
    assert [p.name for p in tmp_path.iterdir()] == ["model.llmpack"]
