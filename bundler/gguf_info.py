"""Reads a GGUF file's header, metadata and tensor table, without loading the weights.

Enough to reject what llama.cpp would reject (not a GGUF, an unsupported version, a truncated file, an
unknown tensor type) with a clear message before anything is bundled, and to describe the model
(architecture, name, quantization) in the manifest.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from . import messages
from .errors import BuildError

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32

# ggml tensor types: (elements per block, bytes per block). Checked against gguf-py in the tests.
GGML_TYPE_SIZES: dict[int, tuple[int, int]] = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 9: (32, 40),
    10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292),
    16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110),
    22: (256, 82), 23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8),
    29: (256, 56), 30: (1, 2), 34: (256, 54), 35: (256, 66), 39: (32, 17), 40: (64, 36), 41: (128, 18),
}

# llama.cpp's `general.file_type` (enum llama_ftype): the quantization users name models by.
FILE_TYPES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M",
    18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S",
    25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M",
    32: "BF16", 36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4_MOE", 39: "NVFP4", 40: "Q1_0",
}

# GGUF metadata value types: struct format of the scalars; 8 = string, 9 = array.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int


@dataclass
class GgufInfo:
    path: str
    version: int
    size: int
    metadata: dict[str, Any] = field(default_factory=dict)
    tensors: list[TensorInfo] = field(default_factory=list)
    data_offset: int = 0
    # Each key's whole entry (key, type, value) as a [start, end) byte range of the file: merging a split
    # GGUF copies entries verbatim, arrays included, which `metadata` skips.
    kv_spans: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def alignment(self) -> int:
        return int(self.metadata.get("general.alignment", DEFAULT_ALIGNMENT))

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", "unknown"))

    @property
    def name(self) -> str | None:
        value = self.metadata.get("general.name")
        return str(value) if value else None

    @property
    def quantization(self) -> str:
        file_type = self.metadata.get("general.file_type")
        if isinstance(file_type, int):
            return FILE_TYPES.get(file_type, f"type {file_type}")
        return "unknown"

    @property
    def is_quantized(self) -> bool:
        return self.quantization not in ("F32", "F16", "BF16", "unknown")

    @property
    def has_chat_template(self) -> bool:
        return "tokenizer.chat_template" in self.metadata


class _Reader:
    def __init__(self, f: BinaryIO, path: str) -> None:
        self._f = f
        self._path = path

    def read(self, n: int) -> bytes:
        data = self._f.read(n)
        if len(data) != n:
            raise BuildError(messages.GGUF_TRUNCATED.format(path=self._path))
        return data

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        length = self.unpack("<Q")
        if length > 1 << 30:
            raise BuildError(messages.GGUF_DAMAGED.format(path=self._path, reason="a string length is out of range"))
        return self.read(length).decode("utf-8", "replace")

    def value(self, value_type: int, keep: bool = True) -> Any:
        if value_type in _SCALARS:
            return self.unpack(_SCALARS[value_type])
        if value_type == _STRING:
            return self.string()
        if value_type == _ARRAY:
            item_type, count = self.unpack("<I"), self.unpack("<Q")
            if item_type in _SCALARS and not keep:
                self.read(struct.calcsize(_SCALARS[item_type]) * count)  # skip vocabularies quickly
                return None
            items = [self.value(item_type, keep) for _ in range(count)]
            return items if keep else None
        raise BuildError(messages.GGUF_DAMAGED.format(path=self._path, reason=f"unknown metadata type {value_type}"))


def read_gguf_info(path: str) -> GgufInfo:
    """Parses the header and tensor table; raises BuildError with one clear line when it is not a
    valid, complete GGUF that llama.cpp could load."""
    try:
        f = open(path, "rb")
    except IsADirectoryError:
        raise BuildError(messages.INPUT_UNREADABLE.format(path=path, reason="it is a directory")) from None
    except OSError as exc:
        raise BuildError(messages.INPUT_UNREADABLE.format(path=path, reason=exc.strerror or str(exc))) from None
    with f:
        size = os.fstat(f.fileno()).st_size
        magic = f.read(4)
        if magic != GGUF_MAGIC:
            raise BuildError(messages.NOT_A_GGUF.format(path=path))
        reader = _Reader(f, path)
        version = reader.unpack("<I")
        if version not in SUPPORTED_VERSIONS:
            raise BuildError(messages.GGUF_VERSION.format(path=path, version=version))
        n_tensors, n_kv = reader.unpack("<Q"), reader.unpack("<Q")
        info = GgufInfo(path, version, size)
        for _ in range(n_kv):
            start = f.tell()
            key = reader.string()
            value_type = reader.unpack("<I")
            # Arrays (vocabularies, merges) are skipped, not kept: we only describe the model.
            info.metadata[key] = reader.value(value_type, keep=value_type != _ARRAY)
            info.kv_spans[key] = (start, f.tell())
        for _ in range(n_tensors):
            name = reader.string()
            n_dims = reader.unpack("<I")
            shape = tuple(reader.unpack("<Q") for _ in range(n_dims))
            info.tensors.append(TensorInfo(name, shape, reader.unpack("<I"), reader.unpack("<Q")))
        info.data_offset = -(-f.tell() // info.alignment) * info.alignment
    _check_tensor_data(info)
    return info


def tensor_nbytes(tensor: TensorInfo, path: str) -> int:
    if tensor.ggml_type not in GGML_TYPE_SIZES:
        raise BuildError(messages.GGUF_UNKNOWN_TYPE.format(path=path, type=tensor.ggml_type, tensor=tensor.name))
    block, block_bytes = GGML_TYPE_SIZES[tensor.ggml_type]
    elements = 1
    for dim in tensor.shape:
        elements *= dim
    return elements // block * block_bytes


def _check_tensor_data(info: GgufInfo) -> None:
    end = info.data_offset
    for tensor in info.tensors:
        end = max(end, info.data_offset + tensor.offset + tensor_nbytes(tensor, info.path))
    if end > info.size:
        raise BuildError(messages.GGUF_TRUNCATED_DATA.format(path=info.path, expected=end, size=info.size))
