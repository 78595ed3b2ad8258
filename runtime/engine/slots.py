"""The scheduler's parts: the backend it drives (`BatchBackend`, which the engine implements), one request
being served (`Slot`), a KV-cache sequence (`KvSequence`), and the hand-over of pieces to their consumers
once per step (`Outbox`, `Sink`)."""

from __future__ import annotations

import codecs
import logging
import queue
import threading
import time
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

from .stop_strings import StopMatcher
from .types import GenerationRequest, SamplingParams, TokenLogprob

log = logging.getLogger(__name__)


class Sampler(Protocol):
    def sample(self, batch_index: int) -> int: ...
    def free(self) -> None: ...


class BatchBackend(Protocol):
    n_ctx: int

    def decode(self, tokens: Sequence[int], positions: Sequence[int], seqs: Sequence[int],
               logits: Sequence[bool]) -> int: ...
    def forget(self, seq: int, from_position: int) -> None: ...
    def sampler(self, params: SamplingParams) -> Sampler: ...
    def token_bytes(self, token: int, special: bool = False) -> bytes: ...
    def is_end_of_generation(self, token: int) -> bool: ...
    def logprob(self, token: int, batch_index: int, top: int) -> TokenLogprob: ...


@dataclass(frozen=True)
class SchedulerStats:
    """A snapshot for /metrics and /health, read from other threads without a lock: each field is one
    read of a counter or a list's length, so a snapshot may be a step stale, never torn."""

    running: int  # holding a sequence: reading the prompt or generating
    waiting: int  # submitted, no free sequence yet
    kv_tokens: int  # tokens held in the KV cache, finished requests' reusable prefixes included
    kv_capacity: int
    n_decode: int  # llama_decode calls made
    decoding: bool  # the decoding thread is alive (or not started yet: it starts on the first request)
    failure: str | None = None  # why the engine cannot compute any more (Scheduler.fail), if it cannot
    kv_unified: bool = False  # one pool shared by the sequences
    prompt_cache: Any = None  # prompt_cache.CacheCounts, with entries and size_bytes, where --cache-ram is on
    prompt_cache_entries: int = 0
    prompt_cache_bytes: int = 0
    spec: Any = None  # speculative.SpecCounts where --spec-type is on


def settle(future: Future, result: Any, error: BaseException | None) -> None:
    """Settles a job's future once: the decoding thread and fail() may both try."""
    try:
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)
    except InvalidStateError:
        pass


class KvSequence:
    """A KV-cache sequence id and the tokens it holds, in position order."""

    def __init__(self, seq_id: int) -> None:
        self.id = seq_id
        self.tokens: list[int] = []


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class Outbox:
    """Pieces the decoding thread made during one step, handed to their consumers when the step is
    over: the server then wakes its event loop once per step for all its streams, not once per token
    per stream (each wake-up is a syscall and a GIL hand-over that the next llama_decode waits for)."""

    def __init__(self) -> None:
        self.items: list[tuple[Sink, Any]] = []
        self.thread: int | None = None  # the decoding thread's ident, set when it starts

    def hand_over(self) -> None:
        items, self.items = self.items, []
        for sink, item in items:
            sink.deliver(item)


class Sink:
    """Delivers a slot's pieces by calling the consumer's function: on the decoding thread at the end
    of each step (Outbox), on any other thread at once."""

    def __init__(self, deliver: Callable[[Any], None], slot: "Slot", outbox: Outbox) -> None:
        self._deliver, self._slot, self._outbox = deliver, slot, outbox

    def put(self, item: Any) -> None:
        if threading.get_ident() == self._outbox.thread:
            self._outbox.items.append((self, item))
        else:
            self.deliver(item)

    def deliver(self, item: Any) -> None:
        try:
            self._deliver(item)
        except Exception:  # a consumer's failure must not stop the decoding thread: drop the request
            log.debug("a consumer failed to take a piece", exc_info=True)
            self._slot.abandoned = True


class Slot:
    """One request being served."""

    def __init__(self, request: GenerationRequest, cancel: threading.Event,
                 deliver: Callable[[Any], None] | None = None, outbox: Outbox | None = None) -> None:
        self.request = request
        self.cancel = cancel
        self.abandoned = False  # the consumer stopped reading
        self.out: Any = queue.SimpleQueue() if deliver is None else Sink(deliver, self, outbox)
        self.seq: KvSequence | None = None
        self.sampler: Sampler | None = None
        self.pending: list[int] = []  # prompt tokens not yet decoded
        self.next_token: int | None = None  # sampled, not yet decoded
        self.batch_index: int | None = None  # where this slot's logits are in the last batch
        self.draft: list[int] = []  # speculated tokens decoded after next_token in the last batch
        self.drafter: Any = None  # speculative.NgramDrafter, where --spec-type is on
        self.stops = StopMatcher(request.stop)
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.generated = 0
        self.reused = 0
        self.admitted = self.prompt_done = time.perf_counter()

    @property
    def cancelled(self) -> bool:
        return self.cancel.is_set() or self.abandoned
