"""N-gram speculation with no second model (llama-server's --spec-type ngram-simple, "prompt lookup"):
the last n tokens of a sequence are looked up earlier in it, and the m tokens that followed them there
are proposed as a draft. The scheduler decodes the draft in the same batch as the sequence's next token
and samples at every drafted position with the request's own sampler chain, keeping drafted tokens while
they equal what was sampled: the output is the one plain decoding gives (the same sampler, the same
logits), only fewer decodes. Code edits, rewrites and answers quoting their context repeat long runs of
the prompt, where most drafts are taken.

The lookup is an index kept per request (n-gram -> where it last ended), grown by the tokens each step
commits: O(1) per token, not a scan of the history (llama.cpp's common_ngram_simple_draft scans). How
much of what followed is drafted depends on how often the request's drafts were right and on what a
longer batch costs here (draft_length.py), where llama-server drafts a fixed --spec-ngram-simple-size-m."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

from .draft_length import DecodeCost, DraftRecord, best_draft_length
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
    """One request's index of the n-grams in its sequence (prompt and committed output), at the
    configured size and, where that finds nothing, at a half and a quarter of it (at least 2): after
    the model departs from the text it copies, the long key matches again only once it has produced
    that many tokens of copy; a shorter one finds the place sooner, and the draft length (from the
    request's record) pays for its misses. The length is draft_length.best_draft_length's."""

    def __init__(self, config: SpeculativeConfig, cost: DecodeCost) -> None:
        self._m, self._cost = config.size_m, cost
        n = config.size_n
        sizes = sorted({n, *(size for size in (n // 2, n // 4) if size >= 2)}, reverse=True)
        self._indexes: list[tuple[int, dict[tuple[int, ...], int]]] = [(size, {}) for size in sizes]
        self._indexed = 0  # n-grams ending at positions up to here are in the indexes
        self.record = DraftRecord()
        self._outstanding = 0  # the length of the draft last proposed, until it is settled

    def draft(self, tokens: Sequence[int], next_token: int, limit: int) -> list[int]:
        """Up to `limit` tokens predicted to follow `tokens` + [next_token] (the sequence's committed
        history): what followed the latest earlier occurrence of its last n tokens."""
        self._outstanding = 0
        length = len(tokens) + 1
        if limit <= 0:
            return []
        for n, index in self._indexes:  # every n-gram that ends in `tokens`
            for end in range(max(self._indexed, n), len(tokens) + 1):
                index[tuple(tokens[end - n:end])] = end
        self._indexed = len(tokens) + 1
        for n, index in self._indexes:
            if length <= n:
                continue
            key = (*tokens[len(tokens) - n + 1:], next_token) if n > 1 else (next_token,)
            end = index.get(key)
            if end is not None:
                break
        else:
            return []
        most = min(self._m, limit, best_draft_length(self.record.keep_chance, self._cost.relative, self._m))
        stop = min(end + most, len(tokens))
        draft = list(tokens[end:stop])
        if len(draft) < most and stop == len(tokens):
            draft.append(next_token)  # the match ran up to now: the next token is its continuation
        self._outstanding = len(draft)
        return draft

    def settle(self, kept: int) -> None:
        """How many tokens of the draft last proposed were kept (nothing, where it proposed none)."""
        if self._outstanding:
            self.record.settle(self._outstanding, kept)
            self._outstanding = 0


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
        first, kept = slot.batch_index, 0
        for i, drafted in enumerate(draft):
            slot.batch_index = first + i
            if not self._sample(slot) or slot.next_token != drafted:
                break
            slot.seq.tokens.append(drafted)  # already decoded: kept as it is
            slot.next_token = None
            kept += 1
        else:
            slot.batch_index = first + len(draft)
            self._sample(slot)
        self._spec_counts.accepted += kept
        if slot.drafter:
            slot.drafter.settle(kept)
        self._backend.forget(slot.seq.id, len(slot.seq.tokens))

