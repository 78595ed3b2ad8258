"""The vocabulary half of the engine: text to tokens and back, and which tokens end a generation.

A mixin of `Engine` (runtime/engine/engine.py), which sets `self.vocab` and the two caches before any of
these run; kept apart so the engine's module stays about loading, generating and the scheduler's
primitives."""

from __future__ import annotations

import ctypes
import functools
from typing import Sequence

from .native import llama


class TokenMethods:
    vocab: object
    _piece_cache: tuple[dict[int, bytes], dict[int, bytes]]
    _eog_cache: dict[int, bool]
    n_vocab: int


    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        data = text.encode("utf-8")
        capacity = len(data) + 8
        tokens = (llama.llama_token * capacity)()
        count = llama.llama_tokenize(self.vocab, data, len(data), tokens, capacity, add_special, parse_special)
        if count < 0:
            capacity = -count
            tokens = (llama.llama_token * capacity)()
            count = llama.llama_tokenize(self.vocab, data, len(data), tokens, capacity, add_special, parse_special)
        return list(tokens[:count])

    def _token_bytes(self, token: int, special: bool = False) -> bytes:
        # Per token id, once: the vocabulary never changes, and the decoding thread asks for every
        # token it makes (a ctypes call and a buffer each time, and a GIL hand-over the server's
        # event loop can take in the middle of a step).
        cache = self._piece_cache[1 if special else 0]
        piece = cache.get(token)
        if piece is None:
            piece = cache[token] = self._token_bytes_uncached(token, special)
        return piece

    def _token_bytes_uncached(self, token: int, special: bool) -> bytes:
        if token < 0:  # an image's or a sound's placeholder (runtime/engine/multimodal.py): no text
            return b""
        buf = ctypes.create_string_buffer(64)
        n = llama.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        return buf.raw[:n]

    def token_bytes(self, token: int, special: bool = False) -> bytes:
        """The bytes a token stands for (a byte-fallback token may be part of a UTF-8 character);
        `special`: a special token's text (`<|im_end|>`) instead of nothing."""
        return self._token_bytes(token, special)

    @functools.cached_property
    def end_of_generation_tokens(self) -> tuple[int, ...]:
        return tuple(t for t in range(self.n_vocab) if llama.llama_vocab_is_eog(self.vocab, t))

    def detokenize(self, tokens: Sequence[int], special: bool = False) -> str:
        return b"".join(self._token_bytes(t, special) for t in tokens).decode("utf-8", "replace")

    def is_end_of_generation(self, token: int) -> bool:
        eog = self._eog_cache.get(token)
        if eog is None:
            eog = self._eog_cache[token] = bool(llama.llama_vocab_is_eog(self.vocab, token))
        return eog
