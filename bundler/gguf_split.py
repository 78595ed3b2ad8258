"""Split GGUFs (llama.cpp's `gguf-split`: `model-00001-of-00003.gguf`, ...): finding the parts, and
merging them into one standard GGUF, like `gguf-split --merge`.

Each part is a GGUF of its own: the first holds all the metadata plus `split.no`, `split.count` and
`split.tensors.count`; the others hold only the `split.*` keys; every part holds its own tensors, with
offsets relative to its own data section. The merged file has the first part's metadata minus the
`split.*` keys (gguf-split keeps them with `split.count = 0`; dropping them gives back exactly the
unsplit model's bytes), then every tensor in part order, each padded to the alignment, as llama.cpp and
gguf-py lay out any GGUF.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import BinaryIO, Callable

from . import messages
from .bundle import CHUNK, atomic_output
from .errors import BuildError
from .gguf_info import GGUF_MAGIC, GgufInfo, TensorInfo, read_gguf_info, tensor_nbytes

# llama.cpp's `llama_split_path`: "%s-%05d-of-%05d.gguf".
SPLIT_NAME = re.compile(r"^(?P<prefix>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")
SPLIT_KEY_PREFIX = "split."

Progress = Callable[[int, int], None]


def split_names(name: str) -> list[str] | None:
    """Every part's name, in order, for the name of any part of a split GGUF (a path in a repository
    works too); None for a name that is not a split GGUF's, or a split into one part, which is a whole
    GGUF already."""
    match = SPLIT_NAME.match(name)
    if not match:
        return None
    no, count = int(match["no"]), int(match["count"])
    if not 1 <= no <= count or count == 1:
        return None
    return [f"{match['prefix']}-{i:05d}-of-{count:05d}.gguf" for i in range(1, count + 1)]


def merged_name(name: str) -> str:
    """`model-00001-of-00003.gguf` -> `model.gguf`: the name the merged model goes by."""
    match = SPLIT_NAME.match(name)
    return f"{match['prefix']}.gguf" if match and split_names(name) else name


def check_first_part(name: str, shown: str | Path) -> list[str] | None:
    """The parts' names for a split GGUF named by its first part; a later part is refused, since users
    give llama.cpp (and us) the first."""
    names = split_names(name)
    if names and name != names[0]:
        match = SPLIT_NAME.match(name)
        assert match
        raise BuildError(messages.SPLIT_NOT_FIRST.format(
            path=shown, no=int(match["no"]), count=len(names), first=names[0]))
    return names


def split_parts(first: Path) -> list[Path]:
    """All the parts of the split GGUF whose first part is `first`, checking that each exists; `[first]`
    for a GGUF that is not split."""
    first = Path(first)
    names = check_first_part(first.name, first)
    if names is None:
        return [first]
    parts = [first.with_name(name) for name in names]
    for part in parts:
        if not part.is_file():
            raise BuildError(messages.SPLIT_PART_MISSING.format(path=part, count=len(parts)))
    return parts


def merge_splits(parts: list[Path], output: Path, progress: Progress | None = None) -> Path:
    """Writes the split GGUF `parts` (in order) to `output` as one standard GGUF, atomically."""
    parts = [Path(p) for p in parts]
    infos = [read_gguf_info(str(p)) for p in parts]
    _check_parts_belong_together(parts, infos)
    first = infos[0]
    alignment = first.alignment
    if alignment <= 0 or alignment & (alignment - 1):
        raise BuildError(messages.GGUF_DAMAGED.format(path=parts[0], reason=f"alignment {alignment} is not a power of 2"))

    kv_keys = [key for key in first.kv_spans if not key.startswith(SPLIT_KEY_PREFIX)]
    sizes = [[tensor_nbytes(tensor, str(part)) for tensor in info.tensors] for part, info in zip(parts, infos)]
    n_tensors = sum(len(info.tensors) for info in infos)

    header = bytearray(GGUF_MAGIC + struct.pack("<IQQ", first.version, n_tensors, len(kv_keys)))
    with open(parts[0], "rb") as f:
        for key in kv_keys:
            start, end = first.kv_spans[key]
            f.seek(start)
            header += f.read(end - start)
    offset = 0
    for info, part_sizes in zip(infos, sizes):
        for tensor, size in zip(info.tensors, part_sizes):
            header += _tensor_info(tensor, offset)
            offset += _padded(size, alignment)
    header += b"\0" * (_padded(len(header), alignment) - len(header))

    total, done = sum(map(sum, sizes)), 0
    with atomic_output(output) as out:
        out.write(header)
        for part, info, part_sizes in zip(parts, infos, sizes):
            with open(part, "rb") as f:
                for tensor, size in zip(info.tensors, part_sizes):
                    f.seek(info.data_offset + tensor.offset)
                    done = _copy(f, out, size, part, done, total, progress)
                    out.write(b"\0" * (_padded(size, alignment) - size))
    return output


def _check_parts_belong_together(parts: list[Path], infos: list[GgufInfo]) -> None:
    def mismatch(index: int, reason: str) -> BuildError:
        return BuildError(messages.SPLIT_MISMATCH.format(path=parts[index], first=parts[0], reason=reason))

    for index, info in enumerate(infos):
        count, no = info.metadata.get("split.count"), info.metadata.get("split.no")
        if count is None or no is None:
            raise mismatch(index, "it has no split.count/split.no keys, so it is not part of a split GGUF")
        if count != len(parts):
            raise mismatch(index, f"it is one of {count} parts, not {len(parts)}")
        if no != index:
            raise mismatch(index, f"it is part {no + 1}, not part {index + 1}")
    expected = infos[0].metadata.get("split.tensors.count")
    found = sum(len(info.tensors) for info in infos)
    if expected is not None and expected != found:
        raise mismatch(0, f"it announces {expected} tensors but the parts hold {found}")
    seen: set[str] = set()
    for index, info in enumerate(infos):
        for tensor in info.tensors:
            if tensor.name in seen:
                raise mismatch(index, f"tensor {tensor.name} is in more than one part")
            seen.add(tensor.name)


def _tensor_info(tensor: TensorInfo, offset: int) -> bytes:
    name = tensor.name.encode("utf-8")
    return (struct.pack("<Q", len(name)) + name + struct.pack("<I", len(tensor.shape))
            + b"".join(struct.pack("<Q", dim) for dim in tensor.shape) + struct.pack("<IQ", tensor.ggml_type, offset))


def _padded(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment


def _copy(source: BinaryIO, out: BinaryIO, length: int, path: Path, done: int, total: int,
          progress: Progress | None) -> int:
    while length:
        block = source.read(min(CHUNK, length))
        if not block:  # read_gguf_info checked the sizes: the part changed under us
            raise BuildError(messages.GGUF_TRUNCATED.format(path=path))
        out.write(block)
        length -= len(block)
        done += len(block)
        if progress:
            progress(done, total)
    return done
