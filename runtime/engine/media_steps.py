"""The scheduler's side of images and audio (runtime/engine/multimodal.py holds libmtmd's): a prompt's
media chunk stands in its ids as a run of negative placeholder ids. Before each batch, a request whose
next prompt ids are such a run has that chunk encoded and decoded into its sequence on its own (as
llama-server's `process_chunk` does between batches); a batch takes text ids only up to the next run.
Pure orchestration: no llama.cpp here."""

from __future__ import annotations

import time
from typing import Any

from .. import messages
from ..errors import EngineFailure

KV_CACHE_FULL = 1


def is_placeholder(token: int) -> bool:
    return token < 0


def text_run(chunk: list[int]) -> list[int]:
    """The ids of `chunk` up to its first placeholder: what a token batch may take."""
    for i, token in enumerate(chunk):
        if token < 0:
            return chunk[:i]
    return chunk


def keep_before_media(request: Any, keep: int) -> int:
    """A reused prefix never ends inside a media chunk: that chunk is decoded again whole."""
    media = getattr(request, "media", None)
    return media.keep_before(keep) if media is not None else keep


def decode_pending_media(backend: Any, slot: Any) -> str | None:
    """Decodes the media chunks at the head of the slot's pending ids. Returns None when done, "length"
    when the context is full, "error" after handing the slot its failure (the caller ends it)."""
    while slot.pending and slot.pending[0] < 0:
        request = slot.request
        index = len(request.prompt_tokens) - len(slot.pending)
        span = request.media.span_at(index) if request.media is not None else None
        if span is None:  # a placeholder with no chunk behind it: never from our own tokenizer
            slot.failure = EngineFailure(messages.ENGINE_INTERNAL_ERROR.format(kind="media", detail="no chunk at %d" % index))
            return "error"
        position = len(slot.seq.tokens)
        status = backend.decode_media(request.media, span, slot.seq.id, position)
        if status == KV_CACHE_FULL:
            backend.forget(slot.seq.id, position)
            return "length"
        if status != 0:
            backend.forget(slot.seq.id, position)
            slot.failure = EngineFailure(messages.DECODE_FAILED.format(status=status))
            return "error"
        slot.seq.tokens.extend(slot.pending[:span.length])
        del slot.pending[:span.length]
        if not slot.pending:
            slot.prompt_done = time.perf_counter()
    return None
