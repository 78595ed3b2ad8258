"""The payload format from both sides: the bundler writes exactly the vector bytes, the runtime reads
them back, and both reject the same damage. The vectors pin the format: changing it must be deliberate
(a new format version), never an accident of one side."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from llmpack.bundler import payload_format as writer_side
from llmpack.bundler.errors import BuildError
from llmpack.runtime.bundle import payload_format as runtime_side
from llmpack.runtime.errors import CorruptBundle

VECTORS = json.loads((Path(__file__).parent / "vectors" / "payload_v2.json").read_text())
# Executables built before the launcher (PyInstaller's one-file runtime): inspect and unpack still read them.
VECTORS_V1 = json.loads((Path(__file__).parent / "vectors" / "payload_v1.json").read_text())
GGUF_HEAD = b"GGUF" + struct.pack("<IQQ", 3, 0, 0)
PACK = b"LLMPACKR\x01\0\0\0\0\0\0\0"  # a runtime pack without entries


def bundle_bytes(vector: dict) -> bytes:
    """A file shaped like an executable: filler, the GGUF (header + filler), the pack, the trailer."""
    gguf = (GGUF_HEAD + b"\xab" * vector["gguf_length"])[:vector["gguf_length"]]
    data = b"\x7fELF" + b"\0" * (vector["gguf_offset"] - 4) + gguf
    if "runtime_offset" in vector:
        data += b"\0" * (vector["runtime_offset"] - len(data)) + PACK
    else:
        data += b"MEI-archive-stand-in"
    return data + bytes.fromhex(vector["trailer_hex"])


def runtime_range(vector: dict) -> writer_side.RuntimeRange:
    return writer_side.RuntimeRange(vector["runtime_offset"], vector["runtime_length"], vector["runtime_sha256"])


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["name"])
def test_bundler_writes_the_vector_bytes(vector: dict) -> None:
    trailer = writer_side.encode_trailer(vector["manifest"], vector["gguf_offset"], vector["gguf_length"],
                                         vector["gguf_sha256"], runtime_range(vector))
    assert trailer.hex() == vector["trailer_hex"]


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["name"])
def test_both_sides_read_the_vector(vector: dict, tmp_path: Path) -> None:
    path = tmp_path / "bundle"
    path.write_bytes(bundle_bytes(vector))
    payload = runtime_side.read_payload(str(path))
    info = writer_side.read_bundle(str(path))
    for read in (payload, info):
        assert (read.gguf_offset, read.gguf_length, read.gguf_sha256, read.manifest) == (
            vector["gguf_offset"], vector["gguf_length"], vector["gguf_sha256"], vector["manifest"])
    assert payload.runtime == (vector["runtime_offset"], vector["runtime_length"], vector["runtime_sha256"])
    assert info.runtime == runtime_range(vector)


@pytest.mark.parametrize("vector", VECTORS_V1, ids=lambda v: v["name"])
def test_the_bundler_still_reads_version_1(vector: dict, tmp_path: Path) -> None:
    path = tmp_path / "old"
    path.write_bytes(bundle_bytes(vector))
    info = writer_side.read_bundle(str(path))
    assert (info.format_version, info.gguf_offset, info.gguf_sha256, info.manifest, info.runtime) == (
        1, vector["gguf_offset"], vector["gguf_sha256"], vector["manifest"], None)


def test_constants_agree() -> None:
    assert writer_side.MAGIC == runtime_side.MAGIC
    assert writer_side.FORMAT_VERSION == runtime_side.FORMAT_VERSION
    assert writer_side.FOOTER.format == runtime_side.FOOTER.format
    assert (writer_side.FLAG_SIDECAR, writer_side.FLAG_NO_WEIGHTS) == (runtime_side.FLAG_SIDECAR,
                                                                        runtime_side.FLAG_NO_WEIGHTS)


@pytest.mark.parametrize("where", ["footer", "manifest"])
def test_every_flipped_trailer_byte_is_caught_by_both_sides(where: str, tmp_path: Path) -> None:
    vector = VECTORS[0]
    data = bundle_bytes(vector)
    trailer_start = len(data) - len(vector["trailer_hex"]) // 2
    footer_start = len(data) - writer_side.FOOTER.size
    positions = range(footer_start, len(data)) if where == "footer" else range(trailer_start, footer_start)
    path = tmp_path / "bundle"
    for position in positions:
        damaged = bytearray(data)
        damaged[position] ^= 0x01
        path.write_bytes(damaged)
        with pytest.raises(CorruptBundle):
            runtime_side.read_payload(str(path))
        with pytest.raises(BuildError):
            writer_side.read_bundle(str(path))


@pytest.mark.parametrize("cut", [1, 7, writer_side.FOOTER.size, 200])
def test_truncation_is_caught_by_both_sides(cut: int, tmp_path: Path) -> None:
    path = tmp_path / "bundle"
    path.write_bytes(bundle_bytes(VECTORS[0])[:-cut])
    with pytest.raises(CorruptBundle, match="damaged"):
        runtime_side.read_payload(str(path))
    with pytest.raises(BuildError):
        writer_side.read_bundle(str(path))


def test_weights_not_starting_with_gguf_are_rejected(tmp_path: Path) -> None:
    vector = VECTORS[0]
    data = bytearray(bundle_bytes(vector))
    data[vector["gguf_offset"]] = ord("X")
    path = tmp_path / "bundle"
    path.write_bytes(data)
    with pytest.raises(CorruptBundle, match="GGUF header"):
        runtime_side.read_payload(str(path))
    with pytest.raises(BuildError, match="GGUF header"):
        writer_side.read_bundle(str(path))


def test_verify_weights_detects_a_flipped_weight_byte(tmp_path: Path) -> None:
    import hashlib

    gguf = GGUF_HEAD + bytes(range(256)) * 8
    sha = hashlib.sha256(gguf).hexdigest()
    offset = 65536
    pack_at = offset + len(gguf)
    trailer = writer_side.encode_trailer({"model": {}}, offset, len(gguf), sha,
                                         writer_side.RuntimeRange(pack_at, len(PACK), hashlib.sha256(PACK).hexdigest()))
    path = tmp_path / "bundle"
    path.write_bytes(b"\0" * offset + gguf + PACK + trailer)
    payload = runtime_side.read_payload(str(path))
    assert runtime_side.verify_weights(payload)
    damaged = bytearray(path.read_bytes())
    damaged[offset + 1000] ^= 0xFF
    path.write_bytes(damaged)
    assert not runtime_side.verify_weights(runtime_side.read_payload(str(path)))
