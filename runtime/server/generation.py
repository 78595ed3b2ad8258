"""Runs an engine generation on a worker thread and hands its pieces to the event loop.

The engine's `generate()` blocks (it waits for a sequence of the batch, then for each token), so it
never runs on the event loop: each request gets a thread that iterates the engine and posts pieces to
an asyncio queue. Leaving the async iteration early (the client went away, the server shuts down) sets
the request's cancel event, which stops the engine at its next token, or before it starts if the
request is still waiting for a sequence.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass

from ..engine import Engine, GenerationRequest, Piece
from .state import Metrics

log = logging.getLogger(__name__)

_END = object()


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

    def __init__(self, engine: Engine, request: GenerationRequest, metrics: Metrics,
                 active: set[Generation] | None = None) -> None:
        self.engine = engine
        self.request = request
        self.metrics = metrics
        self.cancel_event = threading.Event()
        self._active = active
        self.completion_tokens = 0
        self.finished_ok = False  # set by streams that ran to the end (then a usage chunk follows)
        self.thread: threading.Thread | None = None

    def cancel(self) -> None:
        self.cancel_event.set()

    async def pieces(self) -> AsyncIterator[Piece]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        def post(item: object) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop closed (server shut down): the cancel event stops us
                self.cancel_event.set()

        self.thread = threading.Thread(target=self._work, args=(post,), name="llmpack-generation", daemon=True)
        if self._active is not None:
            self._active.add(self)  # until the thread ends, so that shutdown can wait for it
        self.metrics.add(queued=1)
        self.thread.start()
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            # Reached on completion, on an error, and when the consumer stops early (a client that
            # disconnected cancels the task awaiting queue.get(), which lands here).
            self.cancel_event.set()

    def _work(self, post) -> None:
        started = False
        try:
            for piece in self.engine.generate(self.request, self.cancel_event):
                if not started:
                    started = True
                    self.metrics.add(queued=-1, generating=1)
                if piece.token_ids:
                    self.completion_tokens += len(piece.token_ids)
                    self.metrics.add(generated_tokens=len(piece.token_ids))
                if piece.finish_reason == "cancelled":
                    self.metrics.add(cancelled=1)
                elif piece.timings is not None:
                    t = piece.timings
                    self.metrics.finished(t.prompt_tokens, t.prompt_ms, t.generation_ms,
                                          t.prompt_per_second, t.generation_per_second)
                post(piece)
        except BaseException as exc:  # noqa: BLE001 - handed to the request, which answers it as an error
            post(exc)
        finally:
            self.metrics.add(**({"generating": -1} if started else {"queued": -1}))
            if self._active is not None:
                self._active.discard(self)
            post(_END)

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
