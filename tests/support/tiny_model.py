"""Writes a tiny random-weight llama-architecture GGUF that llama.cpp really loads and runs.

Deterministic (seeded), a few hundred KB, with a byte-fallback SentencePiece vocabulary (so any text
tokenizes) and a chat template, so tests exercise real tokenization, decoding and templating.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

# Gemma 2's template: it raises on a system message, which is what the runtime must fold away.
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)

WORDS = ["the", "and", "of", "to", "a", "in", "is", "that", "for", "it", "four", "score", "seven",
         "years", "ago", "hello", "world", "model", "user", "cat", "dog", "yes", "no"]


# Fill-in-the-middle tokens of the `fim=True` variant, appended after the usual vocabulary (whose ids stay).
FIM_TOKENS = ("<fim_prefix>", "<fim_suffix>", "<fim_middle>")


def _vocabulary(fim: bool = False) -> tuple[list[str], list[float], list[int]]:
    tokens = ["<unk>", "<s>", "</s>", "<start_of_turn>", "<end_of_turn>"]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL,
             gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [gguf.TokenType.BYTE] * 256
    pieces = ["\u2581"] + [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["\u2581" + w for w in WORDS]
    tokens += pieces
    types += [gguf.TokenType.NORMAL] * len(pieces)
    scores = [0.0] * 261 + [-float(i) for i in range(len(pieces))]
    if fim:
        tokens += FIM_TOKENS
        types += [gguf.TokenType.CONTROL] * len(FIM_TOKENS)
        scores += [0.0] * len(FIM_TOKENS)
    return tokens, scores, [int(t) for t in types]


def write_tiny_gguf(path: Path, *, n_embd: int = 64, n_layer: int = 2, n_head: int = 4, n_ff: int = 128,
                    n_ctx: int = 512, seed: int = 0, chat_template: str | None = GEMMA_TEMPLATE,
                    name: str = "tiny-test-model", split_max_tensors: int = 0, fim: bool = False,
                    space_prefix: bool = True) -> Path:
    """With `split_max_tensors`, a split GGUF as llama.cpp's gguf-split writes it (`tiny-00001-of-00003.gguf`,
    ...; the same model as without): the path of its first part is returned. `fim`: with fill-in-the-middle
    tokens (FIM_TOKENS, declared as the model's FIM prefix, suffix and middle)."""
    tokens, scores, types = _vocabulary(fim)
    n_vocab = len(tokens)
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), "llama", split_max_tensors=split_max_tensors)
    writer.add_name(name)
    writer.add_context_length(n_ctx)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head)
    writer.add_rope_dimension_count(n_embd // n_head)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)
    if not space_prefix:  # a tag then tokenizes alike alone and inside a text (no "▁" before it)
        writer.add_add_space_prefix(False)
    if fim:
        for key, token in zip((gguf.Keys.Tokenizer.FIM_PRE_ID, gguf.Keys.Tokenizer.FIM_SUF_ID,
                               gguf.Keys.Tokenizer.FIM_MID_ID), FIM_TOKENS):
            writer.add_uint32(key, tokens.index(token))
    if chat_template:
        writer.add_chat_template(chat_template)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.5).astype(np.float32)

    writer.add_tensor("token_embd.weight", weight(n_vocab, n_embd))
    for i in range(n_layer):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        for name_ in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"blk.{i}.{name_}.weight", weight(n_embd, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", weight(n_ff, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", weight(n_ff, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", weight(n_embd, n_ff))
    writer.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    writer.add_tensor("output.weight", weight(n_vocab, n_embd))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return writer.format_shard_names(Path(path))[0]


RERANKER_WORDS = ["the", "cat", "dog", "sat", "on", "mat", "is", "hello", "world", "paris", "france", "capital"]


def write_tiny_reranker(path: Path, *, n_embd: int = 32, n_layer: int = 1, n_head: int = 2, n_ff: int = 64,
                        n_ctx: int = 128, seed: int = 0, pooling: int = gguf.PoolingType.RANK,
                        unused_tokens: int = 0) -> Path:
    """A tiny random-weight BERT cross-encoder with a classification head and rank pooling, as
    convert_hf_to_gguf writes bge-reranker: llama.cpp loads it and scores (query, document) pairs.
    With another `pooling` (CLS, as bge-small's), an embedding model; `unused_tokens`: BERT's [unusedN]
    tokens appended, for a larger vocabulary."""
    # A WordPiece vocabulary as convert_hf_to_gguf writes it: word starts marked with U+2581, "##" dropped.
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + ["\u2581" + c for c in letters] + letters
    tokens += ["\u2581" + w for w in RERANKER_WORDS if len(w) > 1]
    tokens += [f"[unused{i}]" for i in range(unused_tokens)]
    types = [gguf.TokenType.CONTROL] * 5 + [gguf.TokenType.NORMAL] * (len(tokens) - 5)
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), "bert")
    writer.add_name("tiny-reranker")
    writer.add_context_length(n_ctx)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_layer_norm_eps(1e-12)
    writer.add_causal_attention(False)
    writer.add_pooling_type(pooling)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("bert")
    writer.add_token_list(tokens)
    writer.add_token_types([int(t) for t in types])
    writer.add_token_type_count(2)
    writer.add_unk_token_id(1)
    writer.add_pad_token_id(0)
    writer.add_bos_token_id(2)  # [CLS]
    writer.add_sep_token_id(3)
    writer.add_eos_token_id(3)  # bge-reranker's: [SEP] ends a segment
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(True)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.3).astype(np.float32)

    def norm(prefix: str, n: int) -> None:
        writer.add_tensor(f"{prefix}.weight", np.ones(n, dtype=np.float32))
        writer.add_tensor(f"{prefix}.bias", np.zeros(n, dtype=np.float32))

    def linear(prefix: str, n_out: int, n_in: int) -> None:
        writer.add_tensor(f"{prefix}.weight", weight(n_out, n_in))
        writer.add_tensor(f"{prefix}.bias", np.zeros(n_out, dtype=np.float32))

    writer.add_tensor("token_embd.weight", weight(len(tokens), n_embd))
    writer.add_tensor("token_types.weight", weight(2, n_embd))
    writer.add_tensor("position_embd.weight", weight(n_ctx, n_embd))
    norm("token_embd_norm", n_embd)
    for i in range(n_layer):
        for name_ in ("attn_q", "attn_k", "attn_v", "attn_output"):
            linear(f"blk.{i}.{name_}", n_embd, n_embd)
        norm(f"blk.{i}.attn_output_norm", n_embd)
        linear(f"blk.{i}.ffn_up", n_ff, n_embd)
        linear(f"blk.{i}.ffn_down", n_embd, n_ff)
        norm(f"blk.{i}.layer_output_norm", n_embd)
    linear("cls", n_embd, n_embd)  # the classification head: a dense layer, then one score
    linear("cls.output", 1, n_embd)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)


def write_big_gguf(path: Path, n_bytes: int, random_data: bool = False) -> Path:
    """A valid GGUF header declaring one large F32 tensor: a payload of `n_bytes` for size tests.
    Its data is a sparse (zero) region, or real random bytes when the disk must really hold them.
    Bundlable and inspectable, not meant to be run (use -m with a runnable model)."""
    import os
    import struct

    n_floats = n_bytes // 4
    name, key, value = b"big.weight", b"general.architecture", b"llama"
    header = b"GGUF" + struct.pack("<IQQ", 3, 1, 1)
    header += struct.pack("<Q", len(key)) + key + struct.pack("<I", 8) + struct.pack("<Q", len(value)) + value
    header += struct.pack("<Q", len(name)) + name + struct.pack("<IQIQ", 1, n_floats, 0, 0)
    data_offset = -(-len(header) // 32) * 32
    with open(path, "wb") as f:
        f.write(header)
        if random_data:
            f.seek(data_offset)
            block = os.urandom(16 << 20)
            for _ in range(n_floats * 4 // len(block)):
                f.write(block)
        f.truncate(data_offset + 4 * n_floats)
    return path


if __name__ == "__main__":
    import sys

    print(write_tiny_gguf(Path(sys.argv[1] if len(sys.argv) > 1 else "tiny.gguf")))


def write_endless_gguf(path: Path) -> Path:
    """A tiny model that never chooses an end-of-generation token (their output rows are zero, so greedy
    decoding never picks them), with a long context: its replies run until they are stopped."""
    write_tiny_gguf(path, n_ctx=16384, name="endless-test-model")
    reader = gguf.GGUFReader(str(path), "r+")
    output = next(t for t in reader.tensors if t.name == "output.weight")
    output.data[[2, 4]] = 0  # </s> and <end_of_turn>
    reader.data.flush()
    del reader
    return path
