"""Split GGUFs: finding the parts, and merging them into the bytes of the unsplit model."""

from __future__ import annotations

import struct
from pathlib import Path

import gguf
import numpy as np
import pytest
from llmpack.bundler import messages
from llmpack.bundler.errors import BuildError
from llmpack.bundler.gguf_info import read_gguf_info, tensor_nbytes
from llmpack.bundler.gguf_split import (
    merge_splits,
    merged_name,
    split_names,
    split_parts,
)
from support.tiny_model import write_tiny_gguf


@pytest.fixture(scope="module")
def tiny_split(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The session's tiny model (same seed, so the same model) as gguf-py splits it: 21 tensors, 8 a part."""
    first = write_tiny_gguf(tmp_path_factory.mktemp("split") / "tiny.gguf", split_max_tensors=8)
    return split_parts(first)


def write_odd_gguf(path: Path, *, alignment: int | None, split_max_tensors: int = 0) -> Path:
    """A small GGUF whose tensor sizes are not multiples of the alignment, so padding matters, with an
    array in its metadata (copied verbatim by the merge)."""
    writer = gguf.GGUFWriter(str(path), "llama", split_max_tensors=split_max_tensors)
    if alignment:
        writer.add_custom_alignment(alignment)
    writer.add_name("odd")
    writer.add_array("odd.list", ["a", "bc", "def"])
    for i, n in enumerate((3, 5, 7, 33, 1)):
        writer.add_tensor(f"t{i}", np.arange(n, dtype=np.float32) + i)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return writer.format_shard_names(path)[0]


def test_split_names() -> None:
    assert split_names("dir/m-00002-of-00003.gguf") == [f"dir/m-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    for whole in ("m.gguf", "m-00001-of-00001.gguf", "m-00004-of-00003.gguf", "m-00000-of-00003.gguf",
                  "m-1-of-3.gguf"):
        assert split_names(whole) is None, whole
    assert merged_name("m-00001-of-00003.gguf") == "m.gguf" and merged_name("m.gguf") == "m.gguf"


def test_split_parts_of_a_whole_gguf(tiny_gguf: Path, tmp_path: Path) -> None:
    assert split_parts(tiny_gguf) == [tiny_gguf]
    single = tmp_path / "m-00001-of-00001.gguf"
    assert split_parts(single) == [single]  # one part is a whole GGUF: nothing to find or merge


def test_split_parts_in_order(tiny_split: list[Path]) -> None:
    assert [p.name for p in tiny_split] == [f"tiny-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    assert all(p.is_file() for p in tiny_split)


def test_split_parts_wants_the_first_part(tiny_split: list[Path]) -> None:
    with pytest.raises(BuildError) as caught:
        split_parts(tiny_split[1])
    assert str(caught.value) == messages.SPLIT_NOT_FIRST.format(
        path=tiny_split[1], no=2, count=3, first="tiny-00001-of-00003.gguf")


def test_split_parts_missing_part(tiny_split: list[Path], tmp_path: Path) -> None:
    for part in tiny_split[::2]:  # the second is missing
        (tmp_path / part.name).write_bytes(part.read_bytes())
    with pytest.raises(BuildError) as caught:
        split_parts(tmp_path / tiny_split[0].name)
    assert str(caught.value) == messages.SPLIT_PART_MISSING.format(path=tmp_path / tiny_split[1].name, count=3)


def test_merge_gives_the_unsplit_model(tiny_split: list[Path], tiny_gguf: Path, tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    merged = merge_splits(tiny_split, tmp_path / "tiny.gguf", lambda done, total: seen.append((done, total)))
    assert merged.read_bytes() == tiny_gguf.read_bytes()
    info = read_gguf_info(str(merged))
    assert not [key for key in info.metadata if key.startswith("split.")] and len(info.tensors) == 21
    total = sum(read_gguf_info(str(p)).size - read_gguf_info(str(p)).data_offset for p in tiny_split)
    assert seen[-1][0] == seen[-1][1] and 0 < seen[-1][1] <= total
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.gguf"]  # no temporary file left


@pytest.mark.parametrize("alignment", [None, 8, 64, 256])
def test_merge_respects_the_alignment(alignment: int | None, tmp_path: Path) -> None:
    whole = write_odd_gguf(tmp_path / "odd.gguf", alignment=alignment)
    parts = split_like_gguf_split(whole, per_part=2)
    assert [p.name for p in parts] == split_names("odd-00001-of-00003.gguf")
    merged = merge_splits(split_parts(parts[0]), tmp_path / "merged.gguf")
    assert merged.read_bytes() == whole.read_bytes()
    info = read_gguf_info(str(merged))
    assert info.data_offset % (alignment or 32) == 0
    assert all(t.offset % (alignment or 32) == 0 for t in info.tensors)
    reader = gguf.GGUFReader(str(merged))  # gguf-py reads it back: the metadata array and the values
    field = reader.fields["odd.list"]
    assert [bytes(field.parts[i]).decode() for i in field.data] == ["a", "bc", "def"]
    assert list(reader.tensors[3].data) == list(np.arange(33, dtype=np.float32) + 3)


def split_like_gguf_split(whole: Path, per_part: int) -> list[Path]:
    """Splits a GGUF as llama.cpp's `gguf-split --split-max-tensors` does: each part a GGUF with
    `split.no`, `split.count` (u16) and `split.tensors.count` (i32); the first part with all the
    metadata too; the later parts with no other key, hence the default alignment (32). (gguf-py's
    writer pads later parts to a custom alignment without saying so: llama.cpp would misread them.)"""
    info = read_gguf_info(str(whole))
    data = whole.read_bytes()
    groups = [info.tensors[i:i + per_part] for i in range(0, len(info.tensors), per_part)]

    def kv(key: str, fmt: str, type_: int, value: int) -> bytes:
        return struct.pack("<Q", len(key)) + key.encode() + struct.pack("<I", type_) + struct.pack(fmt, value)

    paths = []
    for no, group in enumerate(groups):
        entries = [data[start:end] for start, end in info.kv_spans.values()] if no == 0 else []
        entries += [kv("split.no", "<H", 2, no), kv("split.count", "<H", 2, len(groups)),
                    kv("split.tensors.count", "<i", 5, len(info.tensors))]
        alignment = info.alignment if no == 0 else 32
        head = b"GGUF" + struct.pack("<IQQ", 3, len(group), len(entries)) + b"".join(entries)
        body = b""
        for tensor in group:
            name = tensor.name.encode()
            head += (struct.pack("<Q", len(name)) + name + struct.pack("<I", len(tensor.shape))
                     + b"".join(struct.pack("<Q", d) for d in tensor.shape) + struct.pack("<IQ", tensor.ggml_type, len(body)))
            size = tensor_nbytes(tensor, str(whole))
            body += data[info.data_offset + tensor.offset:info.data_offset + tensor.offset + size]
            body += b"\0" * (-len(body) % alignment)
        head += b"\0" * (-len(head) % alignment)
        path = whole.with_name(f"{whole.stem}-{no + 1:05d}-of-{len(groups):05d}.gguf")
        path.write_bytes(head + body)
        paths.append(path)
    return paths


def test_parts_that_do_not_belong_together(tiny_split: list[Path], tmp_path: Path) -> None:
    other = split_parts(write_tiny_gguf(tmp_path / "two.gguf", split_max_tensors=11))  # 2 parts
    cases = [
        ([tiny_split[1], tiny_split[0], tiny_split[2]], 0, "it is part 2, not part 1"),
        ([tiny_split[0], tiny_split[1], other[1]], 2, "it is one of 2 parts, not 3"),
        ([tiny_split[0], tiny_split[1]], 0, "it is one of 3 parts, not 2"),
    ]
    for parts, bad, reason in cases:
        with pytest.raises(BuildError) as caught:
            merge_splits(parts, tmp_path / "out.gguf")
        assert str(caught.value) == messages.SPLIT_MISMATCH.format(path=parts[bad], first=parts[0], reason=reason)
    assert not (tmp_path / "out.gguf").exists()


def test_a_whole_gguf_is_not_a_part(tiny_gguf: Path, tiny_split: list[Path], tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="has no split.count/split.no keys"):
        merge_splits([tiny_gguf, *tiny_split[1:]], tmp_path / "out.gguf")


def test_wrong_tensor_count(tiny_split: list[Path], tmp_path: Path) -> None:
    """`split.tensors.count` in the first part must match the tensors the parts hold."""
    data = bytearray(tiny_split[0].read_bytes())
    info = read_gguf_info(str(tiny_split[0]))
    start, end = info.kv_spans["split.tensors.count"]
    struct.pack_into("<i", data, end - 4, 20)
    parts = [tmp_path / p.name for p in tiny_split]
    parts[0].write_bytes(data)
    for src, dst in zip(tiny_split[1:], parts[1:]):
        dst.write_bytes(src.read_bytes())
    with pytest.raises(BuildError) as caught:
        merge_splits(parts, tmp_path / "out.gguf")
    assert str(caught.value) == messages.SPLIT_MISMATCH.format(
        path=parts[0], first=parts[0], reason="it announces 20 tensors but the parts hold 21")


def test_truncated_part_writes_nothing(tiny_split: list[Path], tmp_path: Path) -> None:
    parts = [tmp_path / p.name for p in tiny_split]
    for src, dst in zip(tiny_split, parts):
        dst.write_bytes(src.read_bytes())
    parts[2].write_bytes(tiny_split[2].read_bytes()[:-100])
    with pytest.raises(BuildError, match="is truncated"):
        merge_splits(parts, tmp_path / "out.gguf")
    assert sorted(tmp_path.iterdir()) == sorted(parts)


def test_kv_spans_are_the_raw_entries(tiny_gguf: Path) -> None:
    info = read_gguf_info(str(tiny_gguf))
    data = tiny_gguf.read_bytes()
    spans = list(info.kv_spans.items())
    assert len(spans) == len(info.metadata) and spans[0][1][0] == 24  # after magic, version, counts
    for (key, (start, end)), (_, (next_start, _)) in zip(spans, spans[1:]):
        assert end == next_start  # contiguous, in file order
    for key, (start, end) in spans:
        assert data[start:start + 8 + len(key)] == struct.pack("<Q", len(key)) + key.encode()
