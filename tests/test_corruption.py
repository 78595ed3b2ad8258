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


@pytest.mark.parametrize("from_end", [3, 40, 140, 200])
def test_flipped_trailer_byte(bundle_copy: Path, from_end: int) -> None:
    """Bytes 3, 40 and 140 from the end are in the footer (the launcher's check); 200 is in the manifest
    (the runtime's)."""
    flip(bundle_copy, bundle_copy.stat().st_size - from_end)
    line = one_error_line(run([str(bundle_copy), *ARGS]))
    assert line.startswith(f"error: {bundle_copy} is damaged:")
    inspected = llmpack("inspect", str(bundle_copy))
    assert inspected.returncode == 1 and "is damaged" in inspected.stderr


def test_truncated_inside_the_trailer(bundle_copy: Path) -> None:
    data = bundle_copy.read_bytes()
    bundle_copy.write_bytes(data[:-10])
    line = one_error_line(run([str(bundle_copy), *ARGS]))
    assert line == error_line(messages.CORRUPT_BUNDLE.format(path=bundle_copy,
                                                             reason="truncated: no llmpack footer at its end"))


def test_truncated_at_every_depth(bundle_copy: Path, tmp_path: Path) -> None:
    """Cut anywhere past the launcher itself (its first ~70 KB, which the kernel maps): our own line, exit 1,
    whether the cut falls in the weights, the runtime, the manifest or the footer."""
    data = bundle_copy.read_bytes()
    info = json.loads(llmpack("inspect", str(bundle_copy), "--json").stdout)
    launcher_end = info["gguf_offset"]
    cuts = [launcher_end + (len(data) - launcher_end) * k // 16 for k in range(16)] + [len(data) - 1]
    cut_file = tmp_path / "cut.llmpack"
    for cut in cuts:
        cut_file.write_bytes(data[:cut])
        cut_file.chmod(0o755)
        result = run([str(cut_file), *ARGS], env={"LLMPACK_CACHE": str(tmp_path / "cache")})
        line = one_error_line(result)
        assert result.returncode == 1 and line.startswith(f"error: {cut_file} is damaged: "), (cut, line)
    inspected = llmpack("inspect", str(cut_file))
    assert inspected.returncode == 1 and "not an llmpack executable" in inspected.stderr


def test_flipped_runtime_byte(bundle_copy: Path, tmp_path: Path) -> None:
    """Unpacking checks the runtime's sha256: nothing damaged is run or cached. Once a good copy is
    cached, the same damage is only found by --verify (a start does not re-hash the runtime)."""
    runtime = json.loads(llmpack("inspect", str(bundle_copy), "--json").stdout)["runtime"]
    intact = bundle_copy.read_bytes()
    flip(bundle_copy, runtime["offset"] + runtime["length"] // 2)
    empty_cache = tmp_path / "cache"
    result = run([str(bundle_copy), *ARGS], env={"LLMPACK_CACHE": str(empty_cache)})
    # Where the flip lands decides the first symptom: a sha256 mismatch, or deflate data that cannot inflate.
    assert result.returncode == 1
    assert one_error_line(result).startswith(f"error: {bundle_copy} is damaged: runtime archive damaged (")
    assert list((empty_cache / "runtime").iterdir()) == []
    good = tmp_path / "good.llmpack"
    good.write_bytes(intact)
    good.chmod(0o755)
    assert run([str(good), "--version"], env={"LLMPACK_CACHE": str(empty_cache)}).returncode == 0
    assert run([str(bundle_copy), *ARGS], env={"LLMPACK_CACHE": str(empty_cache)}).returncode == 0
    verified = run([str(bundle_copy), "--verify", *ARGS], env={"LLMPACK_CACHE": str(empty_cache)})
    assert one_error_line(verified) == error_line(messages.CORRUPT_BUNDLE.format(
        path=bundle_copy, reason="the runtime's bytes do not match their sha256"))


def test_a_changed_file_in_the_unpacked_runtime_is_found_by_verify(tiny_bundle: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    assert run([str(tiny_bundle), "--version"], env={"LLMPACK_CACHE": str(cache)}).returncode == 0
    entry = next((cache / "runtime").iterdir())
    template = next(entry.rglob("*.txt"))
    template.write_text(template.read_text() + " ")
    result = run([str(tiny_bundle), "--verify", *ARGS], env={"LLMPACK_CACHE": str(cache)})
    assert one_error_line(result).startswith(f"error: the unpacked runtime in {entry} is damaged ({template} differs")
    assert not entry.exists()  # removed: the next start unpacks it again
    assert run([str(tiny_bundle), "--verify", *ARGS], env={"LLMPACK_CACHE": str(cache)}).returncode == 0


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
