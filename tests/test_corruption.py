"""A damaged executable is detected and reported in one line, never run on bad data silently."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from llmpack.runtime import messages
from support.commands import error_line, llmpack, one_error_line, run

pytestmark = pytest.mark.slow
ARGS = ["--cli", "-n", "4", "--temp", "0", "--log-disable", "-p", "hi"]


@pytest.fixture
def bundle_copy(tiny_bundle: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy.llmpack"
    shutil.copy2(tiny_bundle, copy)
    return copy


def flip(path: Path, position: int) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= 0x5A
    path.write_bytes(data)


@pytest.mark.parametrize("from_end", [3, 40, 150])
def test_flipped_trailer_byte(bundle_copy: Path, from_end: int) -> None:
    """Bytes 3 and 40 from the end are in the footer; 150 is in the manifest."""
    flip(bundle_copy, bundle_copy.stat().st_size - from_end)
    line = one_error_line(run([str(bundle_copy), *ARGS]))
    assert line.startswith(f"error: {bundle_copy} is damaged:")
    inspected = llmpack("inspect", str(bundle_copy))
    assert inspected.returncode == 1 and "is damaged" in inspected.stderr


def test_truncated_inside_the_trailer(bundle_copy: Path) -> None:
    data = bundle_copy.read_bytes()
    bundle_copy.write_bytes(data[:-10])
    line = one_error_line(run([str(bundle_copy), *ARGS]))
    assert line == error_line(messages.CORRUPT_BUNDLE.format(
        path=bundle_copy, reason="no payload footer at the end of the file (truncated?)"))


def test_truncated_deep_into_the_file(bundle_copy: Path) -> None:
    """Cut into the archive: the archive's cookie, which PyInstaller's bootloader scans the file for before
    any Python runs, is gone; the bootloader says so in one line of its own, with its own status (255).
    Only a bootloader of ours could print our message instead (see README: How the executable is laid out)."""
    data = bundle_copy.read_bytes()
    bundle_copy.write_bytes(data[:len(data) // 2])
    result = run([str(bundle_copy), *ARGS])
    line = one_error_line(result)
    assert "Could not load PyInstaller's embedded PKG archive" in line and result.returncode == 255
    inspected = llmpack("inspect", str(bundle_copy))
    assert inspected.returncode == 1 and "not an llmpack executable" in inspected.stderr


def test_flipped_weight_byte_is_caught_by_verify(bundle_copy: Path, tiny_gguf: Path) -> None:
    info = json.loads(llmpack("inspect", str(bundle_copy), "--json").stdout)
    # A byte in the middle of the tensor data: the cheap start-up checks cannot see it; --verify does.
    flip(bundle_copy, info["gguf_offset"] + info["gguf_length"] // 2)
    assert run([str(bundle_copy), *ARGS]).returncode == 0
    line = one_error_line(run([str(bundle_copy), "--verify", *ARGS]))
    assert line == error_line(messages.WEIGHTS_MISMATCH.format(path=bundle_copy))
    inspected = llmpack("inspect", str(bundle_copy), "--verify")
    assert inspected.returncode == 1 and "do not match their sha256" in inspected.stderr
    assert llmpack("unpack", str(bundle_copy), "-o", str(bundle_copy.with_suffix(".gguf"))).returncode == 1
    assert not bundle_copy.with_suffix(".gguf").exists()


def test_verify_passes_on_an_intact_bundle(tiny_bundle: Path) -> None:
    result = run([str(tiny_bundle), "--verify", "--cli", "-n", "2", "--temp", "0", "-p", "hi"])
    assert result.returncode == 0 and "weights verified" in result.stderr
