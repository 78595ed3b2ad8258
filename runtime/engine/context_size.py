"""How -c becomes the KV cache: one pool shared by the -np sequences (llama-server's --kv-unified, our
default), or -c divided into -np fixed shares (-no-kvu).

One pool (llama.cpp's unified KV cache): any one sequence may use the whole of -c while the others are
idle, as llama-server does when it picks -np itself; what one request may hold is capped by
--kv-unified-per-slot where given (llama-server's `n_ctx_slot`), and the pool fills only when the
sequences together hold -c (runtime/engine/pool.py says what gives way then). Split (-no-kvu): each
sequence gets -c/-np (`n_ctx_slot` in tools/server/server-context.cpp without --kv-unified).

-c 0 sizes the cache so that every sequence may hold the training context (`common_fit_params`: n_ctx_train
times the number of sequences). A size beyond the model's training context is honoured when -c was
given, with llama.cpp's warning ("possible training context overflow"), as llama-cli and llama-completion
honour it: long-context use with RoPE scaling (YaRN) needs it, and the user who typed -c asked for it.
Our default -c (8192, where llama.cpp's is the training context) is capped at the training context
instead, per sequence: a model trained for less should not degrade because of a default nobody typed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .types import EngineConfig


@dataclass(frozen=True)
class ContextSize:
    requested: int  # -c (0 = the model's training context per sequence)
    n_seq: int  # -np: sequences decoded together (1 outside the server)
    n_ctx_train: int  # the model's training context (0 when the GGUF does not say)
    given: bool = True  # -c was given; the default is capped at the training context
    unified: bool = False  # one pool shared by the sequences (-kvu), else -c split into fixed shares
    per_slot: int = 0  # --kv-unified-per-slot: the most one sequence of the pool may hold (0: the pool)

    @classmethod
    def of(cls, config: EngineConfig, n_ctx_train: int) -> ContextSize:
        return cls(config.n_ctx, config.n_seq_max, n_ctx_train, config.n_ctx_given,
                   config.kv_unified and config.n_seq_max > 1, config.kv_unified_per_slot)

    def pool(self) -> int:
        """The cells the generating sequences share (one pool) or hold between them (split)."""
        if not self.unified:
            return self.per_sequence() * self.n_seq
        if self.requested == 0:
            return (self.per_slot or self.n_ctx_train or 4096) * self.n_seq
        if self.per_slot and not self.given:  # llama-server sizes the pool from the cap unless -c was typed
            return self.per_slot * self.n_seq
        return self.requested

    def cache_cells(self, embeddings: bool) -> int:
        """The whole KV cache: the pool, and room of one sequence's size for the embeddings' own sequence."""
        return self.pool() + (self.per_sequence() if embeddings else 0)

    def per_sequence(self) -> int:
        """The tokens one sequence may hold, before llama.cpp rounds it up to its cache's padding."""
        share = self._uncapped()
        return min(share, self.n_ctx_train) if self.capped(share) else share

    def capped(self, share: int | None = None) -> bool:
        """The default -c's share, cut to the training context."""
        share = self._uncapped() if share is None else share
        return not self.given and self.requested != 0 and 0 < self.n_ctx_train < share

    def _uncapped(self) -> int:
        if self.requested == 0 and not self.unified:
            return self.n_ctx_train or 4096  # llama.cpp refuses a context of 0; a GGUF without one is rare
        if not self.unified:
            return max(1, self.requested // max(1, self.n_seq))
        whole = self.pool() if self.requested else (self.per_slot or self.n_ctx_train or 4096)
        return min(whole, self.per_slot) if self.per_slot else whole

    def beyond_training(self) -> bool:
        """Each sequence holds more than the model was trained for: honoured, with a warning."""
        return 0 < self.n_ctx_train < self.per_sequence()

    def origin(self, actual: int | None = None) -> str:
        """Where the per-sequence size came from, in the flags a user would change. `actual`: the size
        llama.cpp made, which it rounds up to a multiple of 256 per sequence."""
        if self.unified:
            text = self._pool_origin()
        elif self.requested == 0:
            text = "-c 0: the model's training context" + (f" for each of -np {self.n_seq}" if self.n_seq > 1 else "")
        else:
            text = f"-c {self.requested}{'' if self.given else ' (the default)'}" + (
                f" divided among -np {self.n_seq}" if self.n_seq > 1 else "")
        if self.capped():
            text += f", capped at the model's training context of {self.n_ctx_train}"
        elif self.beyond_training():
            text += f", beyond the model's training context of {self.n_ctx_train}"
        if actual is not None and actual > self.per_sequence():
            text += ", rounded up by llama.cpp"
        return text

    def _pool_origin(self) -> str:
        if self.requested == 0:
            text = f"-c 0: a pool of the model's training context for each of -np {self.n_seq}"
        elif self.per_slot and not self.given:
            text = f"a pool of --kv-unified-per-slot {self.per_slot} for each of -np {self.n_seq}"
        else:
            text = f"-c {self.requested}{'' if self.given else ' (the default)'}: one pool shared by -np {self.n_seq}"
        if self.per_slot:
            text += f", at most --kv-unified-per-slot {self.per_slot} each"
        return text

    def sharing(self) -> str:
        """How the sequences share the cache, for /props and /slots: 'unified' or 'split'."""
        return "unified" if self.unified else "split"

    def remedy(self) -> str:
        """What a user can do about a prompt that does not fit."""
        if self.requested == 0:
            return "shorten the prompt or raise -c"
        if self.unified and self.per_slot:
            return "shorten the prompt, raise -c or --kv-unified-per-slot"
        if self.n_seq > 1 and not self.unified:
            return "shorten the prompt, raise -c or lower -np"
        return "shorten the prompt or raise -c"


def describe_context(n_ctx: int, size: ContextSize | None) -> str:
    """'4096 tokens per sequence (-c 8192 divided among -np 2)', for the banner and the log; with one pool
    '8192 tokens (-c 8192: one pool shared by -np 4)'."""
    if size is None:
        return f"{n_ctx} tokens"
    each = " per sequence" if size.n_seq > 1 and not size.unified else ""
    return f"{n_ctx} tokens{each} ({size.origin(n_ctx)})"
