"""Continuous batching: one thread decodes every running request together, one llama_decode per step.

Requests join and leave the running batch at token boundaries. Each holds a KV-cache sequence for its
lifetime, and each step's batch mixes one new token per generating request with prompt chunks of newly
admitted ones (generation first, so streams keep flowing while a long prompt is read). Each request has
its own sampler chain, stop strings, limits and cancellation. A finished request's sequence keeps its
tokens, so the next request sharing that prefix (a chat's next turn) decodes only what is new.

This module is pure orchestration: the engine (the only module that touches llama.cpp) provides the
primitives (`BatchBackend`). Per-token work here is O(1): no re-detokenizing of the whole completion.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import Any, Callable, Iterator

from .. import messages
from ..errors import EngineFailure, UserError
from . import media_steps, pool
from .prompt_cache import PromptCache
from .slots import BatchBackend, KvSequence, Outbox, SchedulerStats, Slot, common_prefix, settle
from .draft_model import DraftModel
from .draft_length import DecodeCost
from .speculative import NgramDrafter, SpecCounts, Speculation
from .types import GenerationRequest, Piece, SpeculativeConfig, Timings

log = logging.getLogger(__name__)


KV_CACHE_FULL = 1  # llama_decode's "no room in the KV cache for this batch"


class Scheduler(Speculation, pool.GivingWay):
    def __init__(self, backend: BatchBackend, n_seq: int, n_batch: int, unified: bool = False,
                 cache_ram_mib: int = 0, speculative: SpeculativeConfig | None = None,
                 draft_model: DraftModel | None = None) -> None:
        self._backend = backend
        self._n_batch = n_batch
        self._unified = unified
        self._pool_cells = getattr(backend, "pool_cells", n_seq * backend.n_ctx)
        self._cache = PromptCache(backend, cache_ram_mib) if cache_ram_mib else None  # type: ignore[arg-type]
        self._spec, self._spec_counts = speculative, SpecCounts()
        self._decode_cost = DecodeCost()  # timed on generation steps: how long n-gram drafts may be
        self._draft_model = draft_model  # -md: drafts where n-gram lookups find none (speculative.py)
        self._deferred: list[Slot] = []  # gave way to a full KV pool: back in line when a request ends
        self._free: list[KvSequence] = [KvSequence(i) for i in range(n_seq)]
        self._sequences = tuple(self._free)
        self._n_decode = 0
        self._waiting: deque[Slot] = deque()
        self._active: list[Slot] = []
        self._jobs: deque[tuple[Callable[[], Any], Future]] = deque()
        self._outbox = Outbox()  # pieces for submit_to's consumers, handed over per step
        self._wake = threading.Condition()
        self._closed = False
        self._failure: EngineFailure | None = None  # set once by fail(): nothing more is decoded
        self._running_jobs: list[tuple[Callable[[], Any], Future]] = []  # taken by the decoding thread
        self._thread: threading.Thread | None = None

    # -- the front ends' side ----------------------------------------------------------------------

    def submit(self, request: GenerationRequest, cancel: threading.Event | None = None) -> Iterator[Piece]:
        slot = Slot(request, cancel or threading.Event())
        self._enqueue(slot)
        return self._stream(slot)

    def submit_to(self, request: GenerationRequest, cancel: threading.Event, deliver: Callable[[Any], None]) -> None:
        """Like submit, but each Piece (or the exception that ends the request) is handed to
        `deliver` on the decoding thread as it is made: no thread of the consumer's waits per token
        (the server posts them straight to its event loop). `deliver` must be quick."""
        self._enqueue(Slot(request, cancel, deliver, self._outbox))

    def _enqueue(self, slot: Slot) -> None:
        with self._wake:
            if self._failure is not None:
                raise self._failure
            if self._closed:
                raise EngineFailure(messages.ENGINE_SHUT_DOWN)
            self._waiting.append(slot)
            self._ensure_thread()
            self._wake.notify()

    def _stream(self, slot: Slot) -> Iterator[Piece]:
        try:
            while True:
                item = slot.out.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            slot.abandoned = True  # a consumer that stops reading stops its generation
            with self._wake:
                self._wake.notify()

    def run_exclusive(self, job: Callable[[], Any]) -> Any:
        """Runs `job` on the decoding thread between two steps (e.g. an embedding), and returns its result."""
        future: Future = Future()
        with self._wake:
            if self._failure is not None:
                raise self._failure
            if self._closed:
                raise EngineFailure(messages.ENGINE_SHUT_DOWN)
            self._jobs.append((job, future))
            self._ensure_thread()
            self._wake.notify()
        return future.result()

    @property
    def busy(self) -> int:
        """Requests running or waiting."""
        return len(self._active) + len(self._waiting) + len(self._deferred)

    def sequences_in_use(self) -> frozenset[int]:
        return frozenset(slot.seq.id for slot in list(self._active))

    def stats(self) -> SchedulerStats:
        thread = self._thread
        return SchedulerStats(
            running=len(self._active), waiting=len(self._waiting) + len(self._deferred),
            kv_tokens=sum(len(seq.tokens) for seq in self._sequences),
            kv_capacity=self._pool_cells, n_decode=self._n_decode,
            decoding=(thread is None or thread.is_alive()) and self._failure is None,
            failure=str(self._failure) if self._failure is not None else None,
            kv_unified=self._unified,
            prompt_cache=self._cache.counts if self._cache else None,
            prompt_cache_entries=len(self._cache) if self._cache else 0,
            prompt_cache_bytes=self._cache.size if self._cache else 0,
            spec=self._spec_counts if self._spec or self._draft_model else None)

    @property
    def failed(self) -> bool:
        return self._failure is not None

    def fail(self, error: EngineFailure) -> None:
        """The engine can no longer compute (a lost RPC worker: llama.cpp's decode will never return).
        Called from another thread while the decoding thread is stuck inside llama.cpp: ends every
        request running or waiting with `error`, refuses later ones with it, and never waits for the
        decoding thread, nor for its lock for long (that thread may be stuck holding it)."""
        if self._failure is not None:
            return
        self._failure = error
        locked = self._wake.acquire(timeout=1.0)
        try:
            slots, jobs = [*self._active, *self._waiting, *self._deferred], [*self._running_jobs, *self._jobs]
            self._waiting.clear()
            self._deferred.clear()
            self._jobs.clear()
            if locked:
                self._wake.notify()  # an idle decoding thread ends
        finally:
            if locked:
                self._wake.release()
        for slot in slots:
            slot.out.put(error)
        for _, future in jobs:
            settle(future, None, error)

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        if self._thread is not None and self._failure is None:  # a failed engine's thread may never return
            self._thread.join()
        if self._draft_model is not None and (self._thread is None or not self._thread.is_alive()):
            self._draft_model.close()

    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="llmpack-decoder", daemon=True)
            self._thread.start()

    # -- the decoding thread -----------------------------------------------------------------------

    def _run(self) -> None:
        self._outbox.thread = threading.get_ident()
        while True:
            with self._wake:
                while not (self._closed or self._waiting or self._active or self._jobs):
                    self._wake.wait()
                if self._failure is not None:
                    return  # fail() has told every request
                if self._closed:
                    break
                jobs = list(self._jobs)
                self._jobs.clear()
                try:
                    self._admit()
                except Exception as exc:  # as below: fail what was being admitted, keep serving
                    log.debug("admission failed", exc_info=True)
                    self._fail_active(EngineFailure(messages.ENGINE_INTERNAL_ERROR.format(kind=type(exc).__name__, detail=exc)))
            self._running_jobs = jobs  # for fail(), should a job never return
            for job, future in jobs:
                try:
                    result = job()
                except BaseException as exc:  # handed to the caller, who re-raises it
                    result, error = None, exc
                else:
                    error = None
                settle(future, result, error)
            self._running_jobs = []
            try:
                for slot in [s for s in self._active if s.cancelled]:
                    self._finish(slot, "cancelled")
                if self._active:
                    self._step()
            except Exception as exc:  # a bug must fail the requests at hand, never hang every later one
                log.debug("decoding step failed", exc_info=True)
                self._fail_active(EngineFailure(messages.ENGINE_INTERNAL_ERROR.format(kind=type(exc).__name__, detail=exc)))
            self._outbox.hand_over()
        shutdown = EngineFailure(messages.ENGINE_SHUT_DOWN)
        for slot in [*self._active, *self._waiting, *self._deferred]:
            slot.out.put(shutdown)
        self._outbox.hand_over()
        for _, future in self._jobs:
            future.set_exception(shutdown)

    def _admit(self) -> None:
        """Gives waiting requests a sequence each, reusing the one whose cache shares most of the prompt."""
        while self._waiting and self._free:
            slot = self._waiting.popleft()
            if slot.cancelled:
                slot.out.put(Piece("", (), "cancelled", Timings(len(slot.request.prompt_tokens), 0, 0.0, 0, 0.0)))
                continue
            prompt = list(slot.request.prompt_tokens)
            try:
                slot.sampler = self._backend.sampler(slot.request.sampling)
            except Exception as exc:  # this request fails with one line; the others go on
                slot.out.put(exc if isinstance(exc, UserError) else
                             EngineFailure(messages.ENGINE_INTERNAL_ERROR.format(kind=type(exc).__name__, detail=exc)))
                continue
            seq = self._choose_sequence(prompt)
            if self._cache is not None:  # a saved prompt may hold more of it; what is overwritten is saved
                seq = self._cache.restore_into(self._free, prompt, seq)
                self._cache.save(seq, common_prefix(seq.tokens, prompt))
            # At least the last prompt token is decoded again: its logits are needed.
            keep = media_steps.keep_before_media(slot.request, min(common_prefix(seq.tokens, prompt), len(prompt) - 1))
            self._free.remove(seq)
            self._backend.forget(seq.id, keep)
            del seq.tokens[keep:]
            slot.seq, slot.reused, slot.pending = seq, keep, prompt[keep:]
            slot.admitted = time.perf_counter()
            slot.drafter = NgramDrafter(self._spec, self._decode_cost) if self._spec else None
            self._active.append(slot)

    def _choose_sequence(self, prompt: list[int]) -> KvSequence:
        """The free sequence whose cache holds most of the prompt; among equals, the one freed first
        (the free list is in the order sequences were freed). Which id a request gets does not make
        the batch cost more while every sequence is busy (the batch is built in id order, _step);
        with some idle, a gap in the running ids (0 and 2) costs llama.cpp a second compute per step,
        which is accepted rather than overwriting a cached conversation to close it. A sequence that
        shares less than a tenth of what it holds (llama-server's --slot-prompt-similarity 0.1) is not
        worth destroying for it: the free one that loses least is taken instead."""
        best = max(self._free, key=lambda s: common_prefix(s.tokens, prompt))
        if common_prefix(best.tokens, prompt) * 10 >= len(best.tokens):
            return best
        return min(self._free, key=lambda s: len(s.tokens) - common_prefix(s.tokens, prompt))

    def _step(self) -> None:
        for slot in [s for s in self._active if s.pending and media_steps.is_placeholder(s.pending[0])]:
            ended = media_steps.decode_pending_media(self._backend, slot)  # an image or sound, on its own
            if ended:
                self._finish(slot, "length") if ended == "length" else self._finish(slot, None, slot.failure)
        members: list[tuple[Slot, list[int], bool]] = []  # slot, its tokens in this batch, is prompt
        room = self._n_batch
        for slot in self._active:  # generation first: one token each keeps every stream moving
            if slot.next_token is not None and room > 0:
                members.append((slot, [slot.next_token], False))
                room -= 1
        if self._spec or self._draft_model:  # then their drafts, where room is left
            room = self._draft_all(members, room)
        for slot in self._active:
            if slot.pending and room > 0:
                members.append((slot, media_steps.text_run(slot.pending[:room]), True))
                room -= len(members[-1][1])
        if not members:
            return
        # In sequence-id order: llama.cpp computes a batch over per-sequence caches in runs of
        # consecutive ids (split_equal), one graph per run, so sequences 3, 2, 1, 0 in that order
        # cost four computes where 0, 1, 2, 3 cost one (8 clients on -np 4 ran at half speed).
        members.sort(key=lambda member: member[0].seq.id)
        tokens: list[int] = []
        positions: list[int] = []
        seqs: list[int] = []
        logits: list[bool] = []
        for slot, chunk, is_prompt in members:
            start = len(slot.seq.tokens)
            want_logits = not is_prompt or len(chunk) == len(slot.pending)
            slot.batch_index = len(tokens) + (0 if not is_prompt else len(chunk) - 1) if want_logits else None
            tokens.extend(chunk)
            positions.extend(range(start, start + len(chunk)))
            seqs.extend([slot.seq.id] * len(chunk))
            # A generating slot's drafted tokens each need their logits, to be verified.
            logits.extend([not is_prompt] * (len(chunk) - 1) + [want_logits])
        started = time.perf_counter()
        status = self._backend.decode(tokens, positions, seqs, logits)
        self._n_decode += 1
        if self._failure is not None:
            return  # failed while decoding: every request has been told already
        if status == KV_CACHE_FULL and self._evict_idle_sequences():
            status = self._backend.decode(tokens, positions, seqs, logits)
            self._n_decode += 1
        if status == KV_CACHE_FULL:
            return self._give_way()  # the next step is made without the request that gave way
        if status != 0:
            failure = EngineFailure(messages.DECODE_FAILED.format(status=status))
            for slot, _, _ in members:
                self._finish(slot, None, failure)
            return
        now = time.perf_counter()
        for slot, chunk, is_prompt in members:
            slot.seq.tokens.extend(chunk)
            if is_prompt:
                del slot.pending[:len(chunk)]
                if not slot.pending:
                    slot.prompt_done = now
            else:
                slot.next_token = None
        for slot, _, _ in members:
            if slot.batch_index is not None and slot in self._active:
                self._verify(slot) if slot.draft else self._sample(slot)
        if self._spec and not any(is_prompt for _, _, is_prompt in members):
            # Decoding and sampling, the two costs a longer draft adds to (a GPU's decode returns
            # before its work is done: the sampling waits for it).
            self._decode_cost.observe(len(tokens), time.perf_counter() - started)

    def _sample(self, slot: Slot) -> bool:
        """Samples the slot's next token, streams it and sets next_token; False when the request ended."""
        request = slot.request
        if slot.cancelled:
            return self._finish(slot, "cancelled")
        if request.max_tokens == 0:
            return self._finish(slot, "length")
        token = slot.sampler.sample(slot.batch_index)
        if self._backend.is_end_of_generation(token):
            if request.special:  # llama.cpp's --special shows the end-of-generation token's text too
                text, _ = slot.stops.feed(slot.decoder.decode(self._backend.token_bytes(token, True)))
                if text:
                    slot.out.put(Piece(text, (token,)))
            return self._finish(slot, "stop")
        slot.generated += 1
        logprobs = () if request.logprobs is None else (
            self._backend.logprob(token, slot.batch_index, request.logprobs),)
        data = self._backend.token_bytes(token, True) if request.special else self._backend.token_bytes(token)
        text, stopped = slot.stops.feed(slot.decoder.decode(data))
        if text or not stopped:
            slot.out.put(Piece(text, (token,), logprobs=logprobs))
        if stopped:
            return self._finish(slot, "stop")
        if 0 <= request.max_tokens <= slot.generated or len(slot.seq.tokens) >= self._backend.n_ctx:
            return self._finish(slot, "length")
        slot.next_token = token
        return True

    def _finish(self, slot: Slot, reason: str | None, error: BaseException | None = None) -> bool:
        """Ends a request: its last piece (or an error), its sampler freed, its sequence kept for reuse.
        Returns False (the request goes on no more), for _sample."""
        self._active.remove(slot)
        self._waiting.extendleft(reversed(self._deferred))  # room has come free: they try again first
        self._deferred.clear()
        if slot.sampler is not None:
            slot.sampler.free()
            slot.sampler = None
        if error is not None:
            self._backend.forget(slot.seq.id, 0)
            slot.seq.tokens.clear()
            slot.out.put(error)
        else:
            tail = "" if reason == "stop" and slot.stops.matched else slot.stops.flush(slot.decoder.decode(b"", final=True))
            now = time.perf_counter()
            prompt_done = slot.prompt_done if not slot.pending else now
            timings = Timings(len(slot.request.prompt_tokens), slot.reused, (prompt_done - slot.admitted) * 1000,
                              slot.generated, (now - prompt_done) * 1000)
            slot.out.put(Piece(tail, (), reason, timings, stop=slot.stops.matched if reason == "stop" else None))
        self._free.append(slot.seq)
        return False

    def _fail_active(self, error: EngineFailure) -> None:
        for slot in list(self._active):
            self._finish(slot, None, error)
