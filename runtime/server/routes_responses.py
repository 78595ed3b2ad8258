"""OpenAI's Responses API: `POST /v1/responses` (plain and streamed), `GET` and `DELETE /v1/responses/{id}`.

A thin dialect over the one chat path (chat_core.py): the body becomes a ChatCompletionRequest, and the
chat's events become Responses output items and the Responses stream's events. Everything refusable is
refused before the first byte, so a streamed request fails with a plain HTTP error as well.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from .. import messages
from . import responses_translate as rt
from .chat_core import (
    ChatRun,
    ChoiceEnd,
    ReasoningDelta,
    TextDelta,
    ToolCallArgs,
    ToolCallStart,
    prepare_chat,
)
from .errors import ApiError, error_payload
from .response_store import MAX_STORED_RESPONSES, ResponseStore, StoredResponse

log = logging.getLogger(__name__)
router = APIRouter()

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _store(request: Request) -> ResponseStore:
    return request.app.state.response_store


def _not_found(response_id: str, param: str | None) -> ApiError:
    return ApiError(404, messages.RESPONSES_NOT_FOUND.format(id=response_id, limit=MAX_STORED_RESPONSES),
                    param=param, code="response_not_found")


@router.post("/v1/responses")
@router.post("/responses")  # as llama-server: clients given a base URL without /v1 work too
async def create_response(body: rt.ResponsesRequest, request: Request):
    rt.refuse_unsupported(body)
    history: list[dict[str, Any]] = []
    if body.previous_response_id is not None:
        previous = _store(request).get(body.previous_response_id)
        if previous is None:
            raise _not_found(body.previous_response_id, "previous_response_id")
        history = list(previous.history)
    if not body.input:
        raise ApiError(400, messages.RESPONSES_INPUT_REQUIRED, param="input")
    new_messages = rt.input_messages(body.input)
    try:
        run = await prepare_chat(request, rt.chat_request(body, history, new_messages))
    except ApiError as exc:
        exc.param = rt.responses_param(exc.param)
        raise
    response_id = rt.new_id("resp")
    created_at = int(time.time())
    conversation = history + new_messages
    if body.stream:
        return StreamingResponse(_stream(request, run, body, response_id, created_at, conversation),
                                 media_type="text/event-stream", headers=SSE_HEADERS)
    result = await run.complete()
    output = rt.output_items(result)
    status, incomplete = rt.status_of(result.choices[0].finish_reason)
    response = rt.response_object(response_id, created_at, run.model, body, status, output,
                                  rt.usage(result.prompt_tokens, result.cached_tokens, result.completion_tokens),
                                  incomplete)
    _remember(request, body, response, conversation)
    return JSONResponse(response)


def _remember(request: Request, body: rt.ResponsesRequest, response: dict[str, Any],
              conversation: list[dict[str, Any]]) -> None:
    if body.store is not False:
        history = tuple(conversation + rt.history_of(response["output"]))
        _store(request).put(response["id"], StoredResponse(response, history))


@router.get("/v1/responses/{response_id}")
async def get_response(response_id: str, request: Request):
    stored = _store(request).get(response_id)
    if stored is None:
        raise _not_found(response_id, None)
    return JSONResponse(stored.response)


@router.delete("/v1/responses/{response_id}")
async def delete_response(response_id: str, request: Request):
    if not _store(request).delete(response_id):
        raise _not_found(response_id, None)
    return JSONResponse({"id": response_id, "object": "response.deleted", "deleted": True})


class _StreamRenderer:
    """The Responses stream's events for one run: output items open when their first piece comes and
    close (with their `.done` events) when the next item starts or the run ends."""

    def __init__(self, response_id: str, created_at: int, model: str, body: rt.ResponsesRequest) -> None:
        self.response_id = response_id
        self.created_at = created_at
        self.model = model
        self.body = body
        self.sequence = 0
        self.output: list[dict[str, Any]] = []  # finished items, and the open one last
        self.text: list[str] | None = None  # the open message's text so far
        self.arguments: list[str] | None = None  # the open function call's arguments so far
        self.thought: list[str] | None = None  # the open reasoning item's text so far
        self.final: dict[str, Any] | None = None
        # Blank text before any item: held back, as the plain answer drops it before tool calls.
        self.pending = ""

    def event(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return f"event: {kind}\ndata: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()

    def response(self, status: str, usage: dict[str, Any] | None = None, incomplete: dict[str, str] | None = None,
                 error: dict[str, Any] | None = None) -> dict[str, Any]:
        output = self.output if status != "in_progress" else []
        return rt.response_object(self.response_id, self.created_at, self.model, self.body, status, output, usage,
                                  incomplete, error)

    def start(self) -> list[bytes]:
        return [self.event("response.created", response=self.response("in_progress")),
                self.event("response.in_progress", response=self.response("in_progress"))]

    def _position(self) -> dict[str, Any]:
        return {"item_id": self.output[-1]["id"], "output_index": len(self.output) - 1}

    def reasoning_delta(self, text: str) -> list[bytes]:
        events = []
        if self.thought is None:
            events = self.close_text("completed") + self.close_call("completed")
            self.thought = []
            self.output.append(rt.reasoning_item(rt.new_id("rs"), "", "in_progress"))
            events.append(self.event("response.output_item.added", output_index=len(self.output) - 1,
                                     item=self.output[-1]))
        self.thought.append(text)
        return events + [self.event("response.reasoning_text.delta", **self._position(), content_index=0, delta=text)]

    def close_thought(self, status: str) -> list[bytes]:
        if self.thought is None:
            return []
        text, self.thought = "".join(self.thought), None
        position = self._position()
        self.output[-1] = rt.reasoning_item(position["item_id"], text, status)
        return [self.event("response.reasoning_text.done", **position, content_index=0, text=text),
                self.event("response.output_item.done", output_index=position["output_index"], item=self.output[-1])]

    def text_delta(self, text: str) -> list[bytes]:
        if self.text is None and self.arguments is None and not (self.pending + text).strip():
            self.pending += text
            return []
        text, self.pending = self.pending + text, ""
        return self.close_thought("completed") + self.close_call("completed") + self._append(text)

    def _append(self, text: str) -> list[bytes]:
        events = self.open_message() if self.text is None else []
        self.text.append(text)
        events.append(self.event("response.output_text.delta", **self._position(), content_index=0, delta=text,
                                 logprobs=[]))
        return events

    def open_message(self) -> list[bytes]:
        self.text = []
        self.output.append(rt.message_item(rt.new_id("msg"), "", "in_progress"))
        return [self.event("response.output_item.added", output_index=len(self.output) - 1, item=self.output[-1]),
                self.event("response.content_part.added", **self._position(), content_index=0,
                           part=rt.output_text_part(""))]

    def close_text(self, status: str) -> list[bytes]:
        if self.text is None:
            return []
        text, self.text = "".join(self.text), None
        position = self._position()
        self.output[-1] = rt.message_item(position["item_id"], text, status)
        return [self.event("response.output_text.done", **position, content_index=0, text=text, logprobs=[]),
                self.event("response.content_part.done", **position, content_index=0,
                           part=rt.output_text_part(text)),
                self.event("response.output_item.done", output_index=position["output_index"],
                           item=self.output[-1])]

    def call_start(self, call_id: str, name: str) -> list[bytes]:
        self.pending = ""
        events = self.close_thought("completed") + self.close_text("completed") + self.close_call("completed")
        self.arguments = []
        self.output.append(rt.function_call_item(rt.new_id("fc"), call_id, name, "", "in_progress"))
        events.append(self.event("response.output_item.added", output_index=len(self.output) - 1,
                                 item=self.output[-1]))
        return events

    def call_arguments(self, fragment: str) -> list[bytes]:
        if self.arguments is None or not fragment:
            return []
        self.arguments.append(fragment)
        return [self.event("response.function_call_arguments.delta", **self._position(), delta=fragment)]

    def close_call(self, status: str) -> list[bytes]:
        if self.arguments is None:
            return []
        arguments, self.arguments = "".join(self.arguments), None
        position = self._position()
        item = self.output[-1]
        self.output[-1] = rt.function_call_item(item["id"], item["call_id"], item["name"], arguments, status)
        return [self.event("response.function_call_arguments.done", **position, arguments=arguments),
                self.event("response.output_item.done", output_index=position["output_index"],
                           item=self.output[-1])]

    def finish(self, end: ChoiceEnd, run: ChatRun) -> list[bytes]:
        status, incomplete = rt.status_of(end.finish_reason)
        events = []
        if self.pending:
            events += self._append(self.pending)
        events += self.close_thought(status)
        if not any(item["type"] != "reasoning" for item in self.output):
            # Nothing generated: still one (empty) message, as the plain answer has.
            events += self.open_message()
        events += self.close_text(status) + self.close_call(status)
        usage = rt.usage(run.prompt_tokens, run.cached_tokens, end.completion_tokens)
        final = self.response(status, usage, incomplete)
        events.append(self.event(f"response.{status}", response=final))
        self.final = final
        return events

    def fail(self, exc: Exception) -> list[bytes]:
        _status, payload = error_payload(exc)
        events = self.close_thought("incomplete") + self.close_text("incomplete") + self.close_call("incomplete")
        error = {"code": "server_error", "message": payload["error"]["message"]}
        return events + [self.event("response.failed", response=self.response("failed", error=error))]


async def _stream(request: Request, run: ChatRun, body: rt.ResponsesRequest, response_id: str, created_at: int,
                  conversation: list[dict[str, Any]]) -> AsyncIterator[bytes]:
    renderer = _StreamRenderer(response_id, created_at, run.model, body)
    for data in renderer.start():
        yield data
    try:
        async for event in run.events():
            if isinstance(event, TextDelta):
                chunks = renderer.text_delta(event.text) if event.text else []
            elif isinstance(event, ReasoningDelta):
                chunks = renderer.reasoning_delta(event.text) if event.text else []
            elif isinstance(event, ToolCallStart):
                chunks = renderer.call_start(event.id, event.name)
            elif isinstance(event, ToolCallArgs):
                chunks = renderer.call_arguments(event.fragment)
            elif isinstance(event, ChoiceEnd):
                chunks = renderer.finish(event, run)
                _remember(request, body, renderer.final, conversation)
            else:
                chunks = []
            for data in chunks:
                yield data
    except Exception as exc:  # noqa: BLE001 - the status line has gone out: reported in the stream
        for data in renderer.fail(exc):
            yield data
