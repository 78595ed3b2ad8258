"""Writes a random-weight GGUF of a real architecture's shape (Llama 3.2 1B by default), for speed
measurements where a trained model cannot be brought (bench/gpu_check.sh: the GPU machine has no
network). Speed depends on the shapes and the quantization, not on what the weights learnt.

    python3 bench/random_llama.py OUT.gguf [--preset llama-1b|tiny]

Needs numpy and gguf-py (llama.cpp's, e.g. PYTHONPATH=<llama.cpp>/gguf-py). F16 weights; quantize with
llama.cpp's llama-quantize for a realistic file (gpu_check.sh makes Q4_K_M).
"""

from __future__ import annotations

import argparse
import sys

import gguf
import numpy as np

PRESETS = {
    # Llama 3.2 1B's shape (vocabulary smaller: a synthetic byte-fallback one): ~1.1 B parameters.
    "llama-1b": dict(n_embd=2048, n_layer=16, n_head=32, n_head_kv=8, n_ff=8192, n_vocab=32000, n_ctx=8192),
    # For testing the script on a CPU.
    "tiny": dict(n_embd=128, n_layer=4, n_head=4, n_head_kv=2, n_ff=256, n_vocab=1024, n_ctx=2048),
}


def vocabulary(n_vocab: int) -> tuple[list[str], list[float], list[int]]:
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL] + [gguf.TokenType.BYTE] * 256
    letters = "abcdefghijklmnopqrstuvwxyz"
    pieces, i = ["\u2581"] + list(letters), 0
    while len(tokens) + len(pieces) < n_vocab:  # synthetic words: every text still tokenizes (bytes)
        word, j = "", i
        while True:
            word, j = word + letters[j % 26], j // 26
            if j == 0:
                break
        pieces.append("\u2581" + word)
        i += 1
    tokens += pieces[: n_vocab - len(tokens)]
    types += [gguf.TokenType.NORMAL] * (n_vocab - len(types))
    scores = [0.0] * 259 + [-float(k) for k in range(n_vocab - 259)]
    return tokens, scores, [int(t) for t in types]


def write(path: str, n_embd: int, n_layer: int, n_head: int, n_head_kv: int, n_ff: int, n_vocab: int,
          n_ctx: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    head = n_embd // n_head
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name(f"random-llama-{n_layer}x{n_embd}")
    writer.add_context_length(n_ctx)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    writer.add_rope_dimension_count(head)
    writer.add_rope_freq_base(500000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    tokens, scores, types = vocabulary(n_vocab)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float16)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    writer.add_tensor("token_embd.weight", weight(n_vocab, n_embd))
    for i in range(n_layer):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", ones(n_embd))
        writer.add_tensor(f"blk.{i}.attn_q.weight", weight(n_embd, n_embd))
        writer.add_tensor(f"blk.{i}.attn_k.weight", weight(n_head_kv * head, n_embd))
        writer.add_tensor(f"blk.{i}.attn_v.weight", weight(n_head_kv * head, n_embd))
        writer.add_tensor(f"blk.{i}.attn_output.weight", weight(n_embd, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", ones(n_embd))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", weight(n_ff, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", weight(n_ff, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", weight(n_embd, n_ff))
    writer.add_tensor("output_norm.weight", ones(n_embd))
    writer.add_tensor("output.weight", weight(n_vocab, n_embd))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="llama-1b")
    args = parser.parse_args(argv)
    write(args.output, **PRESETS[args.preset])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
