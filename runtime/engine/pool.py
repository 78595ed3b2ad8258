"""What gives way when the KV pool is full (one pool shared by the sequences, -kvu).

Any one request may grow into the whole pool while the others are idle, so the pool can fill while
several run. Then, in this order:
1. finished requests' cached prefixes are cleared (saved to --cache-ram first, when it is on);
2. a request still reading its prompt goes back to wait for room (its cells freed; it starts again once
   another request ends, and nobody sees an error), before any that has started answering;
3. a generating request ends with finish_reason "length", as one that reached the end of its context.
The terminal chat's requests (interactive) are chosen last: API traffic that fills the pool gives way to
the person at the keyboard, whose conversation stays whole. Among equals, the request that holds the
most cells goes, which frees the most room. A request that is alone and still finds no room has filled
the pool itself: it ends with "length", or with an error while still reading its prompt."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

from .. import messages
from ..errors import KvPoolFull
from .slots import Slot

if TYPE_CHECKING:
    from .prompt_cache import PromptCache
    from .slots import BatchBackend, KvSequence


def victim(active: Sequence[Slot]) -> Slot:
    """The running request that gives way: not the chat's where another can, one that can still wait
    rather than one that must end, then the one holding the most cells."""
    return max(active, key=lambda slot: (not slot.request.interactive, can_wait(slot, active), len(slot.seq.tokens)))


def can_wait(slot: Slot, active: Sequence[Slot]) -> bool:
    """A request that has produced nothing yet waits for room where others run (they will end)."""
    return slot.generated == 0 and slot.next_token is None and len(active) > 1


class GivingWay:
    """The scheduler's answer to a full pool (a mixin of scheduler.Scheduler)."""

    _backend: BatchBackend
    _active: list[Slot]
    _free: list[KvSequence]
    _deferred: list[Slot]
    _cache: PromptCache | None
    _pool_cells: int
    _finish: Callable[..., Any]

    def _evict_idle_sequences(self) -> bool:
        """Frees the cache held by finished requests' sequences; True when anything was freed."""
        freed = False
        for seq in self._free:
            if seq.tokens:
                if self._cache is not None:
                    self._cache.save(seq)
                self._backend.forget(seq.id, 0)
                seq.tokens.clear()
                freed = True
        return freed

    def _give_way(self) -> None:
        """The KV pool is full with idle sequences cleared: one running request gives way (pool.py)."""
        slot = victim(self._active)
        if not can_wait(slot, self._active):
            if slot.generated or slot.next_token is not None:
                self._finish(slot, "length")
            else:
                self._finish(slot, None, KvPoolFull(messages.KV_POOL_FULL.format(n_pool=self._pool_cells)))
            return
        self._active.remove(slot)  # back in line, its cells freed; it starts again when a request ends
        self._backend.forget(slot.seq.id, 0)
        slot.seq.tokens.clear()
        self._free.append(slot.seq)
        slot.seq, slot.pending = None, []
        slot.sampler.free()
        slot.sampler = None
        self._deferred.append(slot)
