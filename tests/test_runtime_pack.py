"""The runtime pack from both sides: what the bundler writes (bundler/runtime_pack.py), the runtime's
--verify reads back (runtime/bundle/runtime_pack.py); the launcher's unpacking of it is tests/test_launcher.py's."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest
from llmpack.bundler import runtime_pack as writer_side
from llmpack.bundler.errors import BuildError
from llmpack.runtime.bundle import runtime_pack as runtime_side


def make_folder(root: Path) -> Path:
    folder = root / "frozen"
    (folder / "_internal" / "lib").mkdir(parents=True)
    (folder / "llmpack-runtime").write_bytes(b"\x7fELF" + bytes(range(256)) * 40)
    (folder / "llmpack-runtime").chmod(0o755)
    (folder / "_internal" / "lib" / "libx.so.1").write_bytes(b"library " * 1000)
    (folder / "_internal" / "data.zip").write_bytes(os.urandom(3000))
    os.symlink("lib/libx.so.1", folder / "_internal" / "libx.so")
    return folder


def packed(folder: Path) -> tuple[bytes, str]:
    out = io.BytesIO()
    length, digest = writer_side.write_pack(folder, out, "llmpack-runtime")
    data = out.getvalue()
    assert (length, digest) == (len(data), hashlib.sha256(data).hexdigest())
    return data, digest


def test_the_entry_point_comes_first_and_the_rest_sorted(tmp_path: Path) -> None:
    data, _ = packed(make_folder(tmp_path))
    path = tmp_path / "pack"
    path.write_bytes(data)
    with open(path, "rb") as f:
        listed = list(runtime_side.entries(f, 0, len(data)))
    assert [e.path for e in listed] == ["llmpack-runtime", "_internal/data.zip", "_internal/lib/libx.so.1",
                                        "_internal/libx.so"]
    assert listed[0].size == (tmp_path / "frozen" / "llmpack-runtime").stat().st_size
    assert listed[3].kind == writer_side.KIND_SYMLINK


def test_the_same_folder_packs_to_the_same_bytes(tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    first, _ = packed(folder)
    os.utime(folder / "llmpack-runtime", (0, 0))  # timestamps are not part of the pack
    assert packed(folder)[0] == first


def test_verify_finds_a_flipped_byte_in_the_pack_and_a_changed_file(tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    data, digest = packed(folder)
    executable = tmp_path / "exe"
    executable.write_bytes(b"head" + data)
    assert runtime_side.damage_in_pack(str(executable), 4, len(data), digest) is None
    assert runtime_side.damage_in_folder(str(executable), 4, len(data), str(folder)) is None
    damaged = bytearray(executable.read_bytes())
    damaged[4 + len(data) // 2] ^= 1
    executable.write_bytes(damaged)
    assert "sha256" in runtime_side.damage_in_pack(str(executable), 4, len(data), digest)
    executable.write_bytes(b"head" + data)
    (folder / "_internal" / "lib" / "libx.so.1").write_bytes(b"library " * 999 + b"LIBRARY ")
    assert "libx.so.1 differs" in runtime_side.damage_in_folder(str(executable), 4, len(data), str(folder))


def test_a_symlink_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    os.symlink("../../etc/passwd", folder / "_internal" / "escape")
    with pytest.raises(BuildError, match="points outside"):
        writer_side.write_pack(folder, io.BytesIO(), "llmpack-runtime")
