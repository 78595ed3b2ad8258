"""A tiny multimodal pair that libmtmd really loads and runs: the tiny random-weight LM of tiny_model.py
plus a projector GGUF of a real projector type, LLaVA's `mlp` (a CLIP vision tower, then two linear
layers into the LM's embedding space), with random weights.

The projector is what clip.cpp's loader asks for (tools/mtmd/clip.cpp `load_hparams`, `load_tensors`):
the `clip.*` keys, `v.*` tensors for the vision tower and `mm.0`/`mm.2` for LLaVA's projection. An
image becomes (image_size / patch_size)^2 = 16 embeddings, i.e. 16 image tokens in the LM's sequence.
`write_tiny_audio_projector` makes an audio one of a real type too, Ultravox's (a Whisper-style encoder).

Deterministic (seeded), a few hundred KB each.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import gguf
import numpy as np

from .tiny_model import write_tiny_gguf

IMAGE_SIZE = 32
PATCH_SIZE = 8
IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2

def write_tiny_projector(path: Path, *, n_embd_text: int = 64, n_embd: int = 32, n_layer: int = 2, n_head: int = 2,
                         n_ff: int = 64, seed: int = 1) -> Path:
    """A LLaVA-style (`mlp`) projector for a text model of `n_embd_text` dimensions."""
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), "clip")
    writer.add_name("tiny-test-projector")
    writer.add_string("clip.projector_type", "mlp")
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_bool("clip.has_audio_encoder", False)
    writer.add_bool("clip.use_gelu", True)
    writer.add_uint32("clip.vision.image_size", IMAGE_SIZE)
    writer.add_uint32("clip.vision.patch_size", PATCH_SIZE)
    writer.add_uint32("clip.vision.embedding_length", n_embd)
    writer.add_uint32("clip.vision.feed_forward_length", n_ff)
    writer.add_uint32("clip.vision.block_count", n_layer)
    writer.add_uint32("clip.vision.projection_dim", n_embd_text)
    writer.add_uint32("clip.vision.attention.head_count", n_head)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-5)
    writer.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    writer.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)

    def weight(*shape: int, scale: float = 0.5) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    def linear(name: str, n_out: int, n_in: int) -> None:
        writer.add_tensor(f"{name}.weight", weight(n_out, n_in))
        writer.add_tensor(f"{name}.bias", weight(n_out, scale=0.1))

    def norm(name: str, n: int) -> None:
        writer.add_tensor(f"{name}.weight", np.ones(n, dtype=np.float32))
        writer.add_tensor(f"{name}.bias", np.zeros(n, dtype=np.float32))

    n_patches = IMAGE_TOKENS
    writer.add_tensor("v.patch_embd.weight", weight(n_embd, 3, PATCH_SIZE, PATCH_SIZE, scale=0.2).astype(np.float16))
    writer.add_tensor("v.position_embd.weight", weight(n_patches, n_embd, scale=0.1))
    norm("v.pre_ln", n_embd)
    for i in range(n_layer):
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            linear(f"v.blk.{i}.{name}", n_embd, n_embd)
        norm(f"v.blk.{i}.ln1", n_embd)
        norm(f"v.blk.{i}.ln2", n_embd)
        linear(f"v.blk.{i}.ffn_up", n_ff, n_embd)
        linear(f"v.blk.{i}.ffn_down", n_embd, n_ff)
    linear("mm.0", n_embd_text, n_embd)
    linear("mm.2", n_embd_text, n_embd_text)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)


def write_tiny_audio_projector(path: Path, *, n_embd_text: int = 64, n_embd: int = 32, n_layer: int = 1, n_head: int = 2,
                               n_ff: int = 64, n_mel: int = 128, stack: int = 4, seed: int = 2) -> Path:
    """An Ultravox (`ultravox`) projector: a Whisper-style encoder (two conv1d over 128 mel bins, attention
    layers over up to 1500 positions: 30 s), frames stacked by 4, then Ultravox's SwiGLU projector: 375 tokens
    per 30 s chunk. (Stacked by 8, this llama.cpp counts 187 tokens for the 3000 frames of 30 s where its graph
    makes 188, and aborts the process: clip_n_output_tokens rounds 1500 / 8 down, build_stack pads it up.)"""
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), "clip")
    writer.add_name("tiny-test-audio-projector")
    writer.add_string("clip.projector_type", "ultravox")
    writer.add_bool("clip.has_vision_encoder", False)
    writer.add_bool("clip.has_audio_encoder", True)
    writer.add_uint32("clip.audio.embedding_length", n_embd)
    writer.add_uint32("clip.audio.feed_forward_length", n_ff)
    writer.add_uint32("clip.audio.block_count", n_layer)
    writer.add_uint32("clip.audio.projection_dim", n_embd_text)
    writer.add_uint32("clip.audio.attention.head_count", n_head)
    writer.add_float32("clip.audio.attention.layer_norm_epsilon", 1e-5)
    writer.add_uint32("clip.audio.num_mel_bins", n_mel)
    writer.add_uint32("clip.audio.projector.stack_factor", stack)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)

    def weight(*shape: int, scale: float = 0.3) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    def norm(name: str, n: int) -> None:
        writer.add_tensor(f"{name}.weight", np.ones(n, dtype=np.float32))
        writer.add_tensor(f"{name}.bias", np.zeros(n, dtype=np.float32))

    writer.add_tensor("a.conv1d.1.weight", weight(n_embd, n_mel, 3).astype(np.float16))
    writer.add_tensor("a.conv1d.1.bias", weight(n_embd, 1, scale=0.1).reshape(n_embd, 1))
    writer.add_tensor("a.conv1d.2.weight", weight(n_embd, n_embd, 3).astype(np.float16))
    writer.add_tensor("a.conv1d.2.bias", weight(n_embd, 1, scale=0.1).reshape(n_embd, 1))
    writer.add_tensor("a.position_embd.weight", weight(1500, n_embd, scale=0.1))
    for i in range(n_layer):
        for name in ("attn_q", "attn_v", "attn_out"):
            writer.add_tensor(f"a.blk.{i}.{name}.weight", weight(n_embd, n_embd))
            writer.add_tensor(f"a.blk.{i}.{name}.bias", weight(n_embd, scale=0.1))
        writer.add_tensor(f"a.blk.{i}.attn_k.weight", weight(n_embd, n_embd))  # Whisper's keys have no bias
        norm(f"a.blk.{i}.ln1", n_embd)
        norm(f"a.blk.{i}.ln2", n_embd)
        writer.add_tensor(f"a.blk.{i}.ffn_up.weight", weight(n_ff, n_embd))
        writer.add_tensor(f"a.blk.{i}.ffn_up.bias", weight(n_ff, scale=0.1))
        writer.add_tensor(f"a.blk.{i}.ffn_down.weight", weight(n_embd, n_ff))
        writer.add_tensor(f"a.blk.{i}.ffn_down.bias", weight(n_embd, scale=0.1))
    norm("a.post_ln", n_embd)
    hidden = n_embd_text
    writer.add_tensor("mm.a.norm_pre.weight", np.ones(n_embd * stack, dtype=np.float32))
    writer.add_tensor("mm.a.mlp.1.weight", weight(2 * hidden, n_embd * stack))
    writer.add_tensor("mm.a.norm_mid.weight", np.ones(hidden, dtype=np.float32))
    writer.add_tensor("mm.a.mlp.2.weight", weight(n_embd_text, hidden))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)


def write_tiny_multimodal(folder: Path, name: str = "tiny-vision") -> tuple[Path, Path]:
    """The pair: (model, projector), named as llama.cpp's converters name them (`mmproj-*.gguf`)."""
    folder.mkdir(parents=True, exist_ok=True)
    model = write_tiny_gguf(folder / f"{name}.gguf", name=name, n_ctx=1024)
    projector = write_tiny_projector(folder / f"mmproj-{name}.gguf")
    return model, projector


# -- images made without an image library ---------------------------------------------------------

def png_bytes(width: int, height: int, color: tuple[int, int, int] | None = None, seed: int = 0) -> bytes:
    """An RGB PNG: one colour, or seeded noise."""
    if color is not None:
        pixels = np.tile(np.array(color, dtype=np.uint8), (height, width, 1))
    else:
        pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    raw = b"".join(b"\x00" + pixels[y].tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    out = io.BytesIO()
    out.write(b"\x89PNG\r\n\x1a\n")
    out.write(chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)))
    out.write(chunk(b"IDAT", zlib.compress(raw)))
    out.write(chunk(b"IEND", b""))
    return out.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares `width` x `height` and whose data is tiny: a pixel-count bomb's shape."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def wav_bytes(seconds: float = 0.5, rate: int = 16000, freq: float = 440.0) -> bytes:
    """A mono 16-bit PCM WAV of a sine tone."""
    n = int(seconds * rate)
    samples = (np.sin(2 * np.pi * freq * np.arange(n) / rate) * 12000).astype("<i2").tobytes()
    header = b"RIFF" + struct.pack("<I", 36 + len(samples)) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
    return header + b"data" + struct.pack("<I", len(samples)) + samples


if __name__ == "__main__":
    import sys

    print(*write_tiny_multimodal(Path(sys.argv[1] if len(sys.argv) > 1 else ".")))
