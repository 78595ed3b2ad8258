"""The bundler's GGUF reader: it describes real files and rejects what llama.cpp would reject."""

from __future__ import annotations

import struct
from pathlib import Path

import gguf
import pytest
from llmpack.bundler import messages
from llmpack.bundler.errors import BuildError
from llmpack.bundler.gguf_info import FILE_TYPES, GGML_TYPE_SIZES, read_gguf_info


def test_describes_the_tiny_model(tiny_gguf: Path) -> None:
    info = read_gguf_info(str(tiny_gguf))
    assert (info.architecture, info.name, info.quantization) == ("llama", "tiny-test-model", "F32")
    assert info.has_chat_template and info.version == 3 and len(info.tensors) == 21


def test_type_tables_match_gguf_py() -> None:
    for qtype, size in gguf.GGML_QUANT_SIZES.items():
        assert GGML_TYPE_SIZES.get(qtype.value) == size, qtype
    for ftype in gguf.LlamaFileType:
        if ftype.value in FILE_TYPES:
            assert FILE_TYPES[ftype.value] == ftype.name.replace("MOSTLY_", "").replace("ALL_", "")


def test_not_a_gguf(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(BuildError, match="is not a GGUF model file"):
        read_gguf_info(str(path))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="cannot read .*No such file"):
        read_gguf_info(str(tmp_path / "absent.gguf"))


def test_unsupported_version(tmp_path: Path) -> None:
    path = tmp_path / "future.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 9, 0, 0))
    with pytest.raises(BuildError) as caught:
        read_gguf_info(str(path))
    assert str(caught.value) == messages.GGUF_VERSION.format(path=path, version=9)


@pytest.mark.parametrize("keep", [10, 2000, -100])
def test_truncated(tiny_gguf: Path, tmp_path: Path, keep: int) -> None:
    data = tiny_gguf.read_bytes()
    path = tmp_path / "cut.gguf"
    path.write_bytes(data[:keep])
    with pytest.raises(BuildError, match="truncated"):
        read_gguf_info(str(path))


def test_unknown_tensor_type(tiny_gguf: Path, tmp_path: Path) -> None:
    info = read_gguf_info(str(tiny_gguf))
    data = bytearray(tiny_gguf.read_bytes())
    # A tensor entry is: name, n_dims (u32), dims (u64 each), type (u32), offset (u64).
    name = info.tensors[-1].name.encode()
    at = data.index(name, 0, info.data_offset) + len(name) + 4 + 8 * len(info.tensors[-1].shape)
    struct.pack_into("<I", data, at, 200)
    path = tmp_path / "odd.gguf"
    path.write_bytes(data)
    with pytest.raises(BuildError, match="unknown type 200"):
        read_gguf_info(str(path))
