"""The prompt cache in host memory (llama-server's --cache-ram): a sequence about to be reused for another
conversation, or cleared to make room in the KV pool, is first saved here (llama_state_seq_get_data), and
a later request whose prompt starts with a saved one gets it back (llama_state_seq_set_data) instead of
decoding it again: agent loops and multi-turn chats through the API, which resend the whole history each
turn, with more conversations than sequences. Bounded by --cache-ram MiB, least recently used first out.

Runs on the decoding thread only (the scheduler's), as every use of the KV cache does."""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Protocol, Sequence

from .slots import KvSequence, common_prefix

log = logging.getLogger(__name__)

# A sequence is saved only where this many of its tokens would be lost: a few tokens are cheaper to
# decode again than to copy, and each entry costs the whole sequence's cells.
MIN_SAVED_TOKENS = 64
# A saved prompt is restored only where it gives this many more tokens than the best free sequence.
MIN_RESTORE_GAIN = 32


class StateBackend(Protocol):
    def save_state(self, seq: int) -> bytes: ...
    def load_state(self, seq: int, data: bytes) -> bool: ...


@dataclass
class CacheCounts:
    """For /metrics: what the cache holds and what it saved the decoder."""

    saved: int = 0  # sequences saved
    restored: int = 0  # requests that found their prefix here
    tokens_restored: int = 0  # prompt tokens that were not decoded again thanks to it
    evicted: int = 0  # entries dropped to stay within --cache-ram


@dataclass
class Entry:
    tokens: tuple[int, ...]
    data: bytes = field(repr=False)


class PromptCache:
    def __init__(self, backend: StateBackend, limit_mib: int) -> None:
        self._backend = backend
        self._limit = None if limit_mib < 0 else limit_mib * 2**20  # -1: no limit
        self._entries: OrderedDict[int, Entry] = OrderedDict()  # least recently used first
        self._next_id = 0
        self.size = 0  # bytes held
        self.counts = CacheCounts()

    def __len__(self) -> int:
        return len(self._entries)

    def save(self, seq: KvSequence, keep: int = 0) -> None:
        """Saves `seq`'s cells where more than a few of them are about to be lost (all beyond `keep`)."""
        if len(seq.tokens) - keep < MIN_SAVED_TOKENS:
            return
        tokens = tuple(seq.tokens)
        for key, entry in list(self._entries.items()):  # an entry this one extends is superseded
            if len(entry.tokens) <= len(tokens) and tokens[:len(entry.tokens)] == entry.tokens:
                self._drop(key)
        data = self._backend.save_state(seq.id)
        if self._limit is not None and len(data) > self._limit:
            return
        self._entries[self._next_id] = Entry(tokens, data)
        self._next_id += 1
        self.size += len(data)
        self.counts.saved += 1
        while self._limit is not None and self.size > self._limit:
            self._drop(next(iter(self._entries)))
            self.counts.evicted += 1

    def restore_into(self, free: Sequence[KvSequence], prompt: Sequence[int], best: KvSequence) -> KvSequence:
        """The sequence a request should take: `best` (the free one holding most of its prompt), or,
        where a saved prompt holds clearly more, the free sequence that loses least, with that saved
        prompt put back into it (its own cells saved first)."""
        have = common_prefix(best.tokens, prompt)
        found = max(self._entries.items(), key=lambda item: common_prefix(item[1].tokens, prompt), default=None)
        if found is None:
            return best
        key, entry = found
        gain = min(common_prefix(entry.tokens, prompt), len(prompt) - 1) - have
        if gain < MIN_RESTORE_GAIN:
            return best
        target = min(free, key=lambda s: len(s.tokens) - common_prefix(s.tokens, prompt))
        self.save(target, common_prefix(target.tokens, prompt))
        if not self._backend.load_state(target.id, entry.data):  # no room in the pool: decode instead
            log.debug("prompt cache: no room to restore %d tokens", len(entry.tokens))
            target.tokens.clear()
            return target
        target.tokens[:] = entry.tokens
        self._drop(key)  # in the KV cache now; saved again when that sequence is reused
        self.counts.restored += 1
        self.counts.tokens_restored += gain
        return target

    def _drop(self, key: int) -> None:
        entry = self._entries.pop(key)
        self.size -= len(entry.data)
