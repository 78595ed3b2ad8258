"""Kubernetes resource requests for one llmpack executable, computed from its model:

    memory request = weights + KV cache + runtime overhead
      weights      = the GGUF's size (`llmpack inspect`: model.size); llama.cpp maps them from the
                     executable, and every page is read, so all of it ends up resident
      KV cache     = ctx tokens x layers x KV heads x (key + value head size) x 2 bytes (f16 cache); an
                     upper bound for models with sliding-window layers (Gemma 3), which keep less
      overhead     = 384 MiB: the Python runtime, llama.cpp's compute buffers, the HTTP server
    memory limit   = request + 25% (headroom for long prompts' compute buffers)
    cpu request    = the threads llama.cpp decodes with (-t; 2 unless you pass more)

Usage: python build/deploy/resources.py model.llmpack [-c CTX] [-t THREADS]
Prints the `resources:` block of the Deployment (build/deploy/llmpack.yaml) as YAML. -c defaults to the
`-c` stored in the executable (llmpack build ... -- -c N), else 4096; it is the context in total, shared
by the -np sequences, as the server itself counts it."""

from __future__ import annotations

import argparse
import json
import math
import struct
import subprocess
import sys

MIB = 1 << 20
OVERHEAD_MIB = 384
LIMIT_HEADROOM = 1.25
DEFAULT_CTX = 4096

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def inspect(executable: str) -> dict:
    result = subprocess.run(["llmpack", "inspect", "--json", executable], check=False, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(result.stderr.strip() or f"error: llmpack inspect failed on {executable}")
    return json.loads(result.stdout)


def gguf_metadata(path: str, offset: int) -> dict:
    """The GGUF's scalar metadata, read in place from the executable (arrays such as the vocabulary are
    skipped)."""
    with open(path, "rb") as f:
        f.seek(offset)

        def unpack(fmt: str):
            return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]

        def value(kind: int):
            if kind in _SCALARS:
                return unpack(_SCALARS[kind])
            if kind == 8:
                return f.read(unpack("<Q")).decode("utf-8", "replace")
            if kind == 9:
                item, count = unpack("<I"), unpack("<Q")
                if item in _SCALARS:
                    f.seek(struct.calcsize(_SCALARS[item]) * count, 1)
                else:
                    for _ in range(count):
                        value(item)
                return None
            raise ValueError(f"unknown GGUF metadata type {kind}")

        if f.read(4) != b"GGUF":
            sys.exit(f"error: {path} holds no GGUF at offset {offset}")
        unpack("<I")  # version
        unpack("<Q")  # tensors
        metadata = {}
        for _ in range(unpack("<Q")):
            key = f.read(unpack("<Q")).decode("utf-8", "replace")
            metadata[key] = value(unpack("<I"))
        return metadata


def kv_cache_bytes(metadata: dict, ctx: int) -> int:
    arch = metadata["general.architecture"]
    layers = metadata[f"{arch}.block_count"]
    heads = metadata[f"{arch}.attention.head_count"]
    kv_heads = metadata.get(f"{arch}.attention.head_count_kv") or heads
    head = metadata[f"{arch}.embedding_length"] // heads
    key = metadata.get(f"{arch}.attention.key_length") or head
    val = metadata.get(f"{arch}.attention.value_length") or head
    return ctx * layers * kv_heads * (key + val) * 2


def stored_ctx(info: dict) -> int:
    args = info["manifest"].get("default_args") or []
    for flag in ("-c", "--ctx-size"):
        if flag in args[:-1]:
            return int(args[args.index(flag) + 1]) or DEFAULT_CTX
    return DEFAULT_CTX


def resources(executable: str, ctx: int | None = None, threads: int = 2) -> dict:
    info = inspect(executable)
    ctx = ctx or stored_ctx(info)
    kv = kv_cache_bytes(gguf_metadata(info["weights_file"], info["gguf_offset"]), ctx)
    request_mib = math.ceil((info["manifest"]["model"]["size"] + kv) / MIB) + OVERHEAD_MIB
    return {"requests": {"cpu": str(threads), "memory": f"{request_mib}Mi"},
            "limits": {"memory": f"{math.ceil(request_mib * LIMIT_HEADROOM)}Mi"}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("executable")
    parser.add_argument("-c", "--ctx-size", type=int, default=None)
    parser.add_argument("-t", "--threads", type=int, default=2)
    args = parser.parse_args(argv)
    block = resources(args.executable, args.ctx_size, args.threads)
    print("resources:")
    for section, values in block.items():
        print(f"  {section}:")
        for name, amount in values.items():
            print(f"    {name}: {json.dumps(amount)}")  # quoted: cpu "2" stays a string
    return 0


if __name__ == "__main__":
    sys.exit(main())
