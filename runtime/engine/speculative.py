"""N-gram speculation with no second model (llama-server's --spec-type ngram-simple, "prompt lookup"):
the last n tokens of a sequence are looked up earlier in it, and the m tokens that followed them there
are proposed as a draft. The scheduler decodes the draft in the same batch as the sequence's next token
and samples at every drafted position with the request's own sampler chain, keeping drafted tokens while
they equal what was sampled: the output is the one plain decoding gives (the same sampler, the same
logits), only fewer decodes. Code edits, rewrites and answers quoting their context repeat long runs of
the prompt, where most drafts are taken.

The lookup is an index kept per request (n-gram -> where it last ended), grown by the tokens each step
commits: O(1) per token, not a scan of the history (llama.cpp's common_ngram_simple_draft scans)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

from .draft_model import DraftWant
from .types import SpeculativeConfig

if TYPE_CHECKING:
    from .draft_model import DraftModel
    from .slots import BatchBackend, Slot


@dataclass
class SpecCounts:
    """llama-server's spec_decode_* counters, for /metrics."""

    drafts: int = 0
    drafted: int = 0
    accepted: int = 0


class NgramDrafter:
    """One request's index of the n-grams in its sequence (prompt and committed output)."""

    def __init__(self, config: SpeculativeConfig) -> None:
        self._n, self._m = config.size_n, config.size_m
        self._last_end: dict[tuple[int, ...], int] = {}  # n-gram -> the end of its latest occurrence
        self._indexed = 0  # n-grams ending at positions up to here are in the index

    def draft(self, tokens: Sequence[int], next_token: int, limit: int) -> list[int]:
        """Up to `limit` tokens predicted to follow `tokens` + [next_token] (the sequence's committed
        history): what followed the latest earlier occurrence of its last n tokens."""
        n = self._n
        length = len(tokens) + 1
        if limit <= 0 or length <= n:
            return []
        index = self._last_end
        for end in range(max(self._indexed, n), len(tokens) + 1):  # every n-gram that ends in `tokens`
            index[tuple(tokens[end - n:end])] = end
        self._indexed = len(tokens) + 1
        key = (*tokens[len(tokens) - n + 1:], next_token) if n > 1 else (next_token,)
        end = index.get(key)
        if end is None:
            return []
        stop = min(end + min(self._m, limit), len(tokens))
        draft = list(tokens[end:stop])
        if len(draft) < min(self._m, limit) and stop == len(tokens):
            draft.append(next_token)  # the match ran up to now: the next token is its continuation
        return draft


class Speculation:
    """The scheduler's speculative steps (a mixin of scheduler.Scheduler): drafting before a batch is
    decoded, verifying after."""

    _backend: BatchBackend
    _spec_counts: SpecCounts
    _draft_model: DraftModel | None
    _sample: Callable[[Slot], bool]  # the scheduler's: samples, streams, sets next_token; False once ended

    def _draft_all(self, members: list[tuple[Slot, list[int], bool]], room: int) -> int:
        """Drafts for the generating members (their chunk holds their next token), added to their chunks,
        as many tokens as the batch's `room` leaves; returns the room left. N-gram lookups first (where
        --spec-type has them), then the draft model for the sequences they found nothing for, all of
        those in one go (llama-server's order of preference)."""
        wants: list[tuple[Slot, list[int], DraftWant]] = []
        for slot, chunk, _ in members:
            limit = self._draft_limit(slot, room)
            slot.draft = slot.drafter.draft(slot.seq.tokens, slot.next_token, limit) if slot.drafter else []
            if not slot.draft and self._draft_model is not None and limit > 0:
                limit = min(limit, self._draft_model.config.n_max)
                wants.append((slot, chunk, DraftWant(slot.seq.id, slot.seq.tokens, slot.next_token, limit)))
                room -= limit  # reserved: the draft model may use it all
            self._take(slot, chunk)
            room -= len(slot.draft)
        if wants:
            for (slot, chunk, want), draft in zip(wants, self._draft_model.draft([w for _, _, w in wants])):
                slot.draft = draft
                self._take(slot, chunk)
                room += want.limit - len(draft)
        return room

    def _draft_limit(self, slot: Slot, room: int) -> int:
        """The most tokens the batch, the context and the request's limit leave a slot's draft."""
        request = slot.request
        limit = min(room, self._backend.n_ctx - len(slot.seq.tokens) - 2)
        if request.max_tokens >= 0:
            limit = min(limit, request.max_tokens - slot.generated - 1)
        return limit

    def _take(self, slot: Slot, chunk: list[int]) -> None:
        if slot.draft:
            chunk += slot.draft
            self._spec_counts.drafts += 1
            self._spec_counts.drafted += len(slot.draft)

    def _verify(self, slot: Slot) -> None:
        """Samples at the next token's position and at each drafted one after it, keeping drafted tokens
        while they are what was sampled; the cells of the rest are freed."""
        draft, slot.draft = slot.draft, []
        del slot.seq.tokens[len(slot.seq.tokens) - len(draft):]  # back to what is certain
        first = slot.batch_index
        for i, drafted in enumerate(draft):
            slot.batch_index = first + i
            if not self._sample(slot) or slot.next_token != drafted:
                break
            slot.seq.tokens.append(drafted)  # already decoded: kept as it is
            slot.next_token = None
            self._spec_counts.accepted += 1
        else:
            slot.batch_index = first + len(draft)
            self._sample(slot)
        self._backend.forget(slot.seq.id, len(slot.seq.tokens))

