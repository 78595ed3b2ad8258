"""Runs an engine generation and hands its pieces to the event loop.

The engine decodes on its own thread and calls `Generation._deliver` there for every piece, which
posts it to the request's asyncio queue: nothing blocks the event loop, and no thread per request
waits for each token (on a 2-core machine those threads competed with llama.cpp's). Leaving the async iteration early (the client went away, the server shuts down) sets
the request's cancel event, which stops the engine at its next token, or before it starts if the
request is still waiting for a sequence.

A generation stopped by the server's shutdown does not end like a finished one: `pieces()` raises
ServerShuttingDown after the last text, so a stream ends with an error event and a plain answer is a
503, as llama.cpp's server does. A client that went away is only cancelled: there is no one to tell.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass

from .. import messages
from ..engine.interface import ServingEngine
from ..engine.types import GenerationRequest, Piece
from .errors import ApiError
from .state import Metrics

log = logging.getLogger(__name__)

_END = object()


class _Mailbox:
    """Hands pieces from the decoding thread to one event loop: the pieces of one decoding step, for
    every stream, arrive with one wake-up of the loop (one call_soon_threadsafe, one write to its
    self-pipe) instead of one per token per stream. The engine delivers a step's pieces together
    (runtime/engine/scheduler.py), so the first of them schedules the drain and the rest ride along."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._items: list[tuple[asyncio.Queue, object]] = []

    def post(self, queue: asyncio.Queue, item: object) -> None:
        with self._lock:
            self._items.append((queue, item))
            if len(self._items) > 1:
                return  # a drain is already scheduled
        try:
            self._loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop closed
            with self._lock:
                self._items.clear()
            raise

    def _drain(self) -> None:
        with self._lock:
            items, self._items = self._items, []
        for queue, item in items:
            queue.put_nowait(item)


_mailboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Mailbox] = weakref.WeakKeyDictionary()


def _mailbox(loop: asyncio.AbstractEventLoop) -> _Mailbox:
    mailbox = _mailboxes.get(loop)
    if mailbox is None:
        mailbox = _mailboxes[loop] = _Mailbox(loop)
    return mailbox


class ServerShuttingDown(ApiError):
    def __init__(self) -> None:
        super().__init__(503, messages.SERVER_SHUTTING_DOWN, "unavailable_error",
                         code="server_shutting_down")


@dataclass
class Outcome:
    """What a finished generation produced, gathered for non-streamed answers."""

    text: str
    pieces: list[Piece]
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


class Generation:
    """One request's generation. Iterate `pieces()` once; `cancel()` may be called from anywhere."""

    def __init__(self, engine: ServingEngine, request: GenerationRequest, metrics: Metrics,
                 active: set[Generation] | None = None) -> None:
        self.engine = engine
        self.request = request
        self.metrics = metrics
        self.cancel_event = threading.Event()
        self._active = active
        self.completion_tokens = 0
        self.finished_ok = False  # set by streams that ran to the end (then a usage chunk follows)
        self.done = threading.Event()  # set once the engine has delivered its last piece or error
        self.shutting_down = False
        self._started = False

    def cancel(self) -> None:
        self.cancel_event.set()

    def stop_for_shutdown(self) -> None:
        """Cancels because the server stops: the generation then ends with ServerShuttingDown."""
        self.shutting_down = True
        self.cancel_event.set()

    async def pieces(self) -> AsyncIterator[Piece]:
        mailbox = _mailbox(asyncio.get_running_loop())
        queue: asyncio.Queue = asyncio.Queue()

        def post(item: object) -> None:
            try:
                mailbox.post(queue, item)
            except RuntimeError:  # the loop closed (server shut down): the cancel event stops us
                self.cancel_event.set()

        if self._active is not None:
            self._active.add(self)  # until the engine is done with it, so that shutdown can wait
        self.metrics.add(queued=1)
        try:
            self.engine.start(self.request, self.cancel_event, lambda item: self._deliver(item, post))
        except BaseException:
            self._end()
            raise
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                if item.finish_reason == "cancelled" and self.shutting_down:
                    if item.text or item.token_ids:
                        yield dataclasses.replace(item, finish_reason=None, timings=None)
                    raise ServerShuttingDown()
                yield item
        finally:
            # Reached on completion, on an error, and when the consumer stops early (a client that
            # disconnected cancels the task awaiting queue.get(), which lands here).
            self.cancel_event.set()

    def _deliver(self, item: object, post) -> None:
        """Runs on the engine's decoding thread for every piece: account it and post it to the event
        loop, with no thread of ours waiting per token in between."""
        if isinstance(item, Piece):
            if not self._started:
                self._started = True
                self.metrics.add(queued=-1, generating=1)
            if item.token_ids:
                self.completion_tokens += len(item.token_ids)
                self.metrics.add(generated_tokens=len(item.token_ids))
            if item.finish_reason == "cancelled":
                self.metrics.add(cancelled=1)
            elif item.timings is not None:
                t = item.timings
                self.metrics.finished(t.prompt_tokens, t.prompt_ms, t.generation_ms,
                                      t.prompt_per_second, t.generation_per_second, t.cached_tokens)
        post(item)
        if not isinstance(item, Piece) or item.finish_reason is not None:
            self._end()
            post(_END)

    def _end(self) -> None:
        self.metrics.add(**({"generating": -1} if self._started else {"queued": -1}))
        if self._active is not None:
            self._active.discard(self)
        self.done.set()

    async def collect(self) -> Outcome:
        pieces: list[Piece] = []
        finish = "stop"
        async for piece in self.pieces():
            pieces.append(piece)
            if piece.finish_reason:
                finish = piece.finish_reason
        return Outcome("".join(p.text for p in pieces), pieces, finish, len(self.request.prompt_tokens),
                       self.completion_tokens)


async def watch_disconnect(receive, generation: Generation) -> None:
    """For non-streamed answers: the body is already read, so the next ASGI message is the client's
    disconnect; cancel the generation when it comes."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            generation.cancel()
            return


async def run_to_completion(request_receive, generation: Generation) -> Outcome:
    watcher = asyncio.ensure_future(watch_disconnect(request_receive, generation))
    try:
        return await generation.collect()
    finally:
        watcher.cancel()
