"""Anthropic's Messages API: POST /v1/messages (plain and streamed) and /v1/messages/count_tokens, over
the one chat path (chat_core). Errors on these routes take Anthropic's shape (errors.py chooses it by
path); an error once a stream has started is an `event: error`, as Anthropic's API sends it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from ..errors import ContextOverflow
from . import anthropic_translate as at
from .chat_core import (
    ChatRun,
    ChoiceEnd,
    ReasoningDelta,
    TextDelta,
    ToolCallArgs,
    ToolCallStart,
    prepare_chat,
)
from .errors import anthropic_shape, error_payload

router = APIRouter()

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@router.post("/v1/messages")
async def create_message(body: at.MessagesRequest, request: Request):
    run = await prepare_chat(request, at.chat_request(body))
    if not body.stream:
        return JSONResponse(at.message(await run.complete(), run.model, body.stop_sequences))
    return StreamingResponse(message_stream(run, body.stop_sequences), media_type="text/event-stream",
                             headers=SSE_HEADERS)


@router.post("/v1/messages/count_tokens")
async def count_tokens(body: at.CountTokensRequest, request: Request):
    """The prompt's tokens as this model's template renders it, tools included. Preparing the run
    counts them and starts nothing; a prompt too long to run is still counted."""
    try:
        run = await prepare_chat(request, at.chat_request(body))
    except ContextOverflow as exc:
        return {"input_tokens": exc.n_prompt_tokens}
    return {"input_tokens": run.prompt_tokens}


async def message_stream(run: ChatRun, stop_sequences: list[str] | None = None) -> AsyncIterator[bytes]:
    """Anthropic's event sequence: message_start, ping, each content block (start, deltas, stop),
    message_delta with the stop reason and usage, message_stop."""
    blocks = _Blocks()
    yield at.sse_event("message_start", {"type": "message_start", "message": {
        "id": at.new_message_id(), "type": "message", "role": "assistant", "model": run.model, "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": at.usage(run.prompt_tokens, run.cached_tokens, 0)}})
    yield at.sse_event("ping", {"type": "ping"})
    end: ChoiceEnd | None = None
    try:
        async for event in run.events():
            if isinstance(event, TextDelta):
                if event.text:
                    for data in blocks.text(event.text):
                        yield data
            elif isinstance(event, ReasoningDelta):  # a thinking block, with thinking_deltas
                for data in blocks.thinking(event.text):
                    yield data
            elif isinstance(event, ToolCallStart):
                for data in blocks.open({"type": "tool_use", "id": event.id, "name": event.name, "input": {}}):
                    yield data
            elif isinstance(event, ToolCallArgs):
                if event.fragment:
                    yield blocks.delta({"type": "input_json_delta", "partial_json": event.fragment})
            elif isinstance(event, ChoiceEnd):
                end = event
    except Exception as exc:  # noqa: BLE001 - the status line is sent: the client hears it in the stream
        _status, payload = error_payload(exc)
        yield at.sse_event("error", anthropic_shape(payload))
        return
    for data in blocks.finish():
        yield data
    finish = end.finish_reason if end else "stop"
    output_tokens = end.completion_tokens if end else 0
    yield at.sse_event("message_delta", {
        "type": "message_delta",
        "delta": at.stop_fields(finish, getattr(end, "stop_sequence", None), stop_sequences),
        "usage": at.usage(run.prompt_tokens, run.cached_tokens, output_tokens)})
    yield at.sse_event("message_stop", {"type": "message_stop"})


class _Blocks:
    """The content blocks of a streamed message: one open at a time, numbered in order."""

    def __init__(self) -> None:
        self.index = -1
        self.open_type: str | None = None

    def open(self, block: dict[str, Any]) -> list[bytes]:
        out = self.close()
        self.index += 1
        self.open_type = block["type"]
        out.append(at.sse_event("content_block_start",
                                {"type": "content_block_start", "index": self.index, "content_block": block}))
        return out

    def close(self) -> list[bytes]:
        if self.open_type is None:
            return []
        self.open_type = None
        return [at.sse_event("content_block_stop", {"type": "content_block_stop", "index": self.index})]

    def delta(self, delta: dict[str, Any]) -> bytes:
        return at.sse_event("content_block_delta", {"type": "content_block_delta", "index": self.index,
                                                    "delta": delta})

    def text(self, text: str) -> list[bytes]:
        out = self.open({"type": "text", "text": ""}) if self.open_type != "text" else []
        out.append(self.delta({"type": "text_delta", "text": text}))
        return out

    def thinking(self, text: str) -> list[bytes]:
        out = self.open({"type": "thinking", "thinking": "", "signature": ""}) if self.open_type != "thinking" else []
        out.append(self.delta({"type": "thinking_delta", "thinking": text}))
        return out

    def finish(self) -> list[bytes]:
        # An empty answer is one empty text block, as the plain response has.
        out = self.open({"type": "text", "text": ""}) if self.index < 0 else []
        return out + self.close()
