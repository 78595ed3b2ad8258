"""Embeddings and reranking scores: a mixin of `Engine` (runtime/engine/engine.py). They run on the
decoding thread between two generation steps (Scheduler.run_exclusive), in a sequence of their own
that the engine keeps for them."""

from __future__ import annotations

import math
from typing import Sequence

from .. import messages
from ..errors import ContextOverflow, EngineFailure
from .native import llama


class EmbeddingMethods:

    def embed(self, tokens: Sequence[int], normalize: bool = True) -> list[float]:
        """One vector for `tokens`: the model's pooled embedding, or the mean of its per-token ones
        when the model has no pooling (a generative model). L2-normalized, as OpenAI's are. Needs an
        engine created with EngineConfig(embeddings=True). Runs on the decoding thread between two
        generation steps, in a sequence of its own."""
        rows = self._embedding_rows(tokens)
        vector = rows[0] if len(rows) == 1 and self.pooling != "none" else [
            math.fsum(column) / len(rows) for column in zip(*rows)]
        if normalize:
            norm = math.sqrt(math.fsum(x * x for x in vector))
            vector = [x / norm for x in vector] if norm > 0 else vector
        return vector

    def embed_each(self, tokens: Sequence[int]) -> list[list[float]]:
        """llama-server's /embeddings: one row per token without pooling (unnormalized), else one
        pooled row (a reranker's: its classifier's scores)."""
        return self._embedding_rows(tokens)

    def _embedding_rows(self, tokens: Sequence[int]) -> list[list[float]]:
        if not self.config.embeddings:
            raise EngineFailure(messages.EMBEDDINGS_OFF)
        if not tokens:
            raise EngineFailure(messages.EMBED_INPUT_EMPTY)
        self.check_fits(len(tokens))
        return self._scheduler.run_exclusive(lambda: self._embed_now(list(tokens)))

    def _embed_now(self, tokens: list[int]) -> list[list[float]]:
        seq = self._embedding_seq
        llama.llama_set_embeddings(self.context, True)
        try:
            return self._embed_sequence(tokens, seq)
        finally:
            llama.llama_set_embeddings(self.context, False)
            self.forget(seq, 0)

    def _embed_sequence(self, tokens: list[int], seq: int) -> list[list[float]]:
        n_embd = self.n_embd
        pooling = self.pooling
        step = self.config.n_batch
        if pooling != "none" and len(tokens) > self.n_ubatch:
            # A pooled (encoder) model must see the whole input in one micro-batch.
            raise ContextOverflow(len(tokens), self.n_ubatch)
        rows: list[list[float]] = []
        for offset in range(0, len(tokens), step):
            chunk = tokens[offset:offset + step]
            status = self.decode(chunk, range(offset, offset + len(chunk)), [seq] * len(chunk), [True] * len(chunk))
            if status != 0:
                raise EngineFailure(messages.EMBED_FAILED.format(status=status))
            if pooling == "none":
                for i in range(len(chunk)):
                    row = llama.llama_get_embeddings_ith(self.context, i)
                    if not row:
                        raise EngineFailure(messages.NO_EMBEDDINGS)
                    rows.append(row[:n_embd])
        if pooling != "none":
            row = llama.llama_get_embeddings_seq(self.context, seq)
            if not row:
                raise EngineFailure(messages.NO_EMBEDDINGS)
            # Rank pooling gives the classifier's outputs, not an embedding.
            width = max(1, llama.llama_model_n_cls_out(self.model)) if pooling == "rank" else n_embd
            return [row[:width]]
        return rows
