"""How -c is divided among the -np sequences, as llama-server divides it.

llama-server gives each of its -np slots -c/-np tokens (`n_ctx_slot` in tools/server/server-context.cpp),
and with -c 0 sizes the cache so that every slot gets the training context (`common_fit_params`: n_ctx_train
times the number of sequences). A share beyond the model's training context is honoured when -c was
given, with llama.cpp's warning ("possible training context overflow"), as llama-cli and llama-completion
honour it: long-context use with RoPE scaling (YaRN) needs it, and the user who typed -c asked for it.
Our default -c (8192, where llama.cpp's is the training context) is capped at the training context
instead: a model trained for less should not degrade because of a default nobody typed.
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

    @classmethod
    def of(cls, config: EngineConfig, n_ctx_train: int) -> ContextSize:
        return cls(config.n_ctx, config.n_seq_max, n_ctx_train, config.n_ctx_given)

    def cache_cells(self, embeddings: bool) -> int:
        """The whole KV cache: a share for each sequence, and one more for the embeddings' own sequence."""
        return self.per_sequence() * (self.n_seq + (1 if embeddings else 0))

    def per_sequence(self) -> int:
        """The tokens each sequence may hold, before llama.cpp rounds it up to its cache's padding."""
        if self.requested == 0:
            return self.n_ctx_train or 4096  # llama.cpp refuses a context of 0; a GGUF without one is rare
        share = max(1, self.requested // max(1, self.n_seq))
        return min(share, self.n_ctx_train) if self.capped() else share

    def capped(self) -> bool:
        """The default -c's share, cut to the training context."""
        return not self.given and self.requested != 0 and 0 < self.n_ctx_train < self.requested // max(1, self.n_seq)

    def beyond_training(self) -> bool:
        """Each sequence holds more than the model was trained for: honoured, with a warning."""
        return 0 < self.n_ctx_train < self.per_sequence()

    def origin(self, actual: int | None = None) -> str:
        """Where the per-sequence size came from, in the flags a user would change. `actual`: the size
        llama.cpp made, which it rounds up to a multiple of 256 per sequence."""
        if self.requested == 0:
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

    def remedy(self) -> str:
        """What a user can do about a prompt that does not fit."""
        if self.requested == 0:
            return "shorten the prompt or raise -c"
        return "shorten the prompt, raise -c or lower -np" if self.n_seq > 1 else "shorten the prompt or raise -c"


def describe_context(n_ctx: int, size: ContextSize | None) -> str:
    """'4096 tokens per sequence (-c 8192 divided among -np 2)', for the banner and the log."""
    if size is None:
        return f"{n_ctx} tokens"
    return f"{n_ctx} tokens{' per sequence' if size.n_seq > 1 else ''} ({size.origin(n_ctx)})"
