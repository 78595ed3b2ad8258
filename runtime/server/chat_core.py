"""The one chat path every API dialect runs (OpenAI chat completions, Responses, Anthropic Messages,
Ollama): a ChatCompletionRequest in, neutral events out. Each dialect turns its body into a
ChatCompletionRequest, calls `prepare_chat` (which refuses everything refusable before a byte is
sent, so each dialect maps the exception to its own error shape), then renders `run.events()` or
`await run.complete()` in its own shape, as llama.cpp's server converts every dialect to one chat
completions path.

    run = await prepare_chat(request, body)
    async for event in run.events(): ...   # TextDelta | ToolCallStart | ToolCallArgs | ChoiceEnd
    result = await run.complete()          # ChatResult

A client that disconnects cancels the run; a server shutdown raises ServerShuttingDown.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from ..formats.chat_template import tokenize_prompt_text
from ..engine.interface import ServingEngine
from ..engine.types import GenerationRequest, Piece, Timings
from ..flags.values import verbose_prompt_line
from ..tools.families import Family, detect
from ..tools.prompt import template_messages
from ..tools.spec import ToolRequestError, parse_tools, tool_choice
from ..tools.stream import CallSplitter
from . import media_parts
from . import translate as tr
from .chat_formats import ChoiceParser, Prepared, formats_request
from .chat_formats import prepare as prepare_formats
from .errors import ApiError
from .generation import Generation
from .schemas import ChatCompletionRequest, CompletionRequest
from .state import EngineHolder

log = logging.getLogger(__name__)


# -- events --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TextDelta:
    choice: int
    text: str
    # OpenAI's logprobs content entries ({"token", "logprob", "bytes", "top_logprobs"}), one per token.
    logprobs: tuple | None = None


@dataclass(frozen=True)
class ReasoningDelta:
    """A thinking model's thought, apart from its answer (llama-server's reasoning_content)."""
    choice: int
    text: str


@dataclass(frozen=True)
class ToolCallStart:
    choice: int
    index: int
    id: str
    name: str


@dataclass(frozen=True)
class ToolCallArgs:
    choice: int
    index: int
    fragment: str  # argument JSON text, in order


@dataclass(frozen=True)
class ChoiceEnd:
    choice: int
    finish_reason: str  # "stop" | "length" | "tool_calls"
    completion_tokens: int
    stop_sequence: str | None = None  # the stop string that ended the choice (a client's, or the template's)


ChatEvent = TextDelta | ReasoningDelta | ToolCallStart | ToolCallArgs | ChoiceEnd


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str


@dataclass
class ChoiceResult:
    text: str | None
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str = "stop"
    completion_tokens: int = 0
    logprobs: tuple | None = None
    stop_sequence: str | None = None
    reasoning: str = ""  # the thought, apart (empty: none)


@dataclass
class ChatResult:
    choices: list[ChoiceResult]
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int


# -- the run -------------------------------------------------------------------------------------

def ready_engine(request: Request) -> tuple[ServingEngine, EngineHolder]:
    holder: EngineHolder = request.app.state.holder
    if holder.engine is None:
        raise ApiError(503, "the model is still loading; retry in a moment", "unavailable_error",
                       code="model_loading", headers={"Retry-After": "1"})
    return holder.engine, holder


def log_prompt(settings, engine: ServingEngine, tokens: list[int]) -> None:
    """--verbose-prompt: what the model receives, special tokens included, and its token count."""
    if settings.verbose_prompt:
        log.info("%s", verbose_prompt_line(engine.detokenize(tokens, special=True), len(tokens)))


def prepare_completion(state: Any, engine: ServingEngine, body: CompletionRequest) -> tuple[list[int], GenerationRequest]:
    """The raw-completion path's checks and request (/v1/completions, Ollama's raw /api/generate), run
    off the event loop: everything refusable is raised here, before anything is sent."""
    tokens = tr.completion_prompt_tokens(engine, body)
    engine.check_fits(len(tokens))
    log_prompt(state.settings, engine, tokens)
    if body.grammar is not None:
        engine.check_grammar(body.grammar)
    tr.check_logit_bias(engine, body)
    return tokens, tr.completion_generation_request(state.settings, state.base_sampling, body, tokens)


class ChatRun:
    """One prepared chat request: its n choices run as concurrent generations in the engine."""

    def __init__(self, request: Request, engine: ServingEngine, model: str,
                 generation_requests: list[GenerationRequest], tools: Family | None = None,
                 formats: Prepared | None = None, streaming: bool = True) -> None:
        state = request.app.state
        self._receive = request.receive
        self.engine = engine
        self.model = model
        self.n = len(generation_requests)
        self.prompt_tokens = len(generation_requests[0].prompt_tokens)
        self.cached_tokens = 0
        self.want_logprobs = generation_requests[0].logprobs is not None
        self.prompt_text = ""  # the rendered prompt, for llama-server's `__verbose`
        self.timings: Timings | None = None  # the last choice's to end, for llama-server's `timings`
        self._tools = tools  # the family whose calls to read from the output; None: text only
        self._formats, self._streaming = formats, streaming  # llama.cpp's chat library reads the output
        self._generations = [Generation(engine, g, state.metrics, state.active_generations)
                             for g in generation_requests]

    def _logprob_entries(self, piece: Piece) -> tuple | None:
        if not (self.want_logprobs and piece.logprobs):
            return None
        return tuple(tr.chat_logprobs(self.engine, piece.logprobs)["content"])

    def _parsed(self, choice: int, events: list[tuple]) -> list[ChatEvent]:
        out: list[ChatEvent] = []
        for event in events:
            kind = event[0]
            if kind == "content":
                out.append(TextDelta(choice, event[1]))
            elif kind == "reasoning":
                out.append(ReasoningDelta(choice, event[1]))
            elif kind == "call":
                out.append(ToolCallStart(choice, event[1], event[2], event[3]))
            else:
                out.append(ToolCallArgs(choice, event[1], event[2]))
        return out

    async def _formats_events(self, choice: int) -> AsyncIterator[ChatEvent]:
        """A choice read by llama.cpp's chat library: content, reasoning and tool calls as they stream."""
        generation = self._generations[choice]
        parser = ChoiceParser(self._formats.applied, self._streaming)
        async for piece in generation.pieces():
            for event in self._parsed(choice, parser.feed(piece.text)):
                yield event
            if piece.logprobs and self.want_logprobs:
                yield TextDelta(choice, "", self._logprob_entries(piece))
            if piece.timings is not None:
                self.cached_tokens = max(self.cached_tokens, piece.timings.cached_tokens)
                self.timings = piece.timings
            if not piece.finish_reason:
                continue
            for event in self._parsed(choice, parser.finish()):
                yield event
            finish = "tool_calls" if parser.calls else tr.finish_reason(piece.finish_reason)
            yield ChoiceEnd(choice, finish, generation.completion_tokens, piece.stop if finish == "stop" else None)

    async def _choice_events(self, choice: int) -> AsyncIterator[ChatEvent]:
        if self._formats is not None:
            async for event in self._formats_events(choice):
                yield event
            return
        generation = self._generations[choice]
        splitter = CallSplitter(self._tools) if self._tools is not None else None
        async for piece in generation.pieces():
            text = splitter.feed(piece.text) if splitter is not None else piece.text
            if text or (piece.logprobs and splitter is None):
                yield TextDelta(choice, text, self._logprob_entries(piece))
            if piece.timings is not None:
                self.cached_tokens = max(self.cached_tokens, piece.timings.cached_tokens)
                self.timings = piece.timings
            if not piece.finish_reason:
                continue
            finish = tr.finish_reason(piece.finish_reason)
            if splitter is not None:
                rest, calls = splitter.finish()
                if rest:
                    yield TextDelta(choice, rest)
                for index, call in enumerate(calls):
                    yield ToolCallStart(choice, index, call.id, call.name)
                    yield ToolCallArgs(choice, index, call.arguments)
                finish = "tool_calls" if calls else finish
            yield ChoiceEnd(choice, finish, generation.completion_tokens, piece.stop if finish == "stop" else None)

    async def events(self) -> AsyncIterator[ChatEvent]:
        """The choices' events as they come, interleaved; raises what a generation raises."""
        if self.n == 1:
            async for event in self._choice_events(0):
                yield event
            return
        queue: asyncio.Queue = asyncio.Queue()
        done = object()

        async def pump(choice: int) -> None:
            try:
                async for event in self._choice_events(choice):
                    await queue.put(event)
                await queue.put(done)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                await queue.put(exc)

        tasks = [asyncio.ensure_future(pump(i)) for i in range(self.n)]
        try:
            remaining = self.n
            while remaining:
                item = await queue.get()
                if item is done:
                    remaining -= 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield item
        finally:
            for task in tasks:
                task.cancel()
            for generation in self._generations:
                generation.cancel()

    async def _watch_disconnect(self) -> None:
        """For whole answers: the body is already read, so the next ASGI message is the client's
        disconnect; it cancels every choice."""
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                for generation in self._generations:
                    generation.cancel()
                return

    async def complete(self) -> ChatResult:
        """All choices, whole; the client's disconnect (watched on `receive`) cancels them."""
        texts: list[list[str]] = [[] for _ in range(self.n)]
        logprobs: list[list[Any]] = [[] for _ in range(self.n)]
        calls: list[list[ToolCall]] = [[] for _ in range(self.n)]
        thoughts: list[list[str]] = [[] for _ in range(self.n)]
        ends: dict[int, ChoiceEnd] = {}
        watcher = asyncio.ensure_future(self._watch_disconnect())
        try:
            async for event in self.events():
                if isinstance(event, TextDelta):
                    texts[event.choice].append(event.text)
                    if event.logprobs:
                        logprobs[event.choice].extend(event.logprobs)
                elif isinstance(event, ReasoningDelta):
                    thoughts[event.choice].append(event.text)
                elif isinstance(event, ToolCallStart):
                    calls[event.choice].append(ToolCall(event.id, event.name, ""))
                elif isinstance(event, ToolCallArgs):
                    calls[event.choice][event.index].arguments += event.fragment
                elif isinstance(event, ChoiceEnd):
                    ends[event.choice] = event
        finally:
            watcher.cancel()
        choices = []
        for i in range(self.n):
            end = ends.get(i) or ChoiceEnd(i, "stop", self._generations[i].completion_tokens)
            text = "".join(texts[i])
            choices.append(ChoiceResult(None if calls[i] and not text.strip() else text, calls[i], end.finish_reason,
                                        end.completion_tokens,
                                        tuple(logprobs[i]) if self.want_logprobs else None, end.stop_sequence,
                                        "".join(thoughts[i])))
        return ChatResult(choices, self.prompt_tokens, self.cached_tokens,
                          sum(c.completion_tokens for c in choices))


async def prepare_chat(request: Request, body: ChatCompletionRequest) -> ChatRun:
    """Checks and prepares a chat request; raises ApiError / UserError / ContextOverflow for anything
    refused, before the caller has sent anything."""
    state = request.app.state
    engine, holder = ready_engine(request)
    body, files = media_parts.extract(body, getattr(engine, "projector", None))  # images and sounds: markers
    n = body.n or 1
    if n > engine.config.n_seq_max:
        raise ApiError(400, f"n={n} is more than the {engine.config.n_seq_max} sequences this server decodes "
                       "at once (its -np)", param="n")

    chat = await run_in_threadpool(holder.formatter.llama_chat, engine)
    formats: Prepared | None = None

    def prepare() -> tuple[GenerationRequest, Family | None, str]:
        nonlocal formats
        if chat is not None:  # llama.cpp's chat library: every format it knows, as llama-server
            formats = prepare_formats(state.settings, chat, body)
            return formats_request(state, engine, holder, body, formats, log_prompt), None, formats.text
        text, tokens, family, tool_grammar = render_chat(engine, holder, body)
        engine.check_fits(len(tokens))
        tr.check_logit_bias(engine, body)
        log_prompt(state.settings, engine, tokens)
        generation_request = tr.chat_generation_request(state.settings, state.base_sampling, holder.formatter,
                                                        body.model_copy(update={"n": None}), tokens)
        if generation_request.sampling.grammar != state.base_sampling.grammar:
            # The client's GBNF or its response_format's (--grammar's was checked at start): refused
            # before the stream starts.
            engine.check_grammar(generation_request.sampling.grammar)
        if tool_grammar is None:
            return generation_request, None, text
        if body.grammar or body.json_schema is not None or (body.response_format and body.response_format.type != "text"):
            raise ApiError(400, "response_format and grammar cannot be combined with tools: the tool calls "
                           "have their own grammar", param="response_format" if body.response_format else "grammar")
        engine.check_grammar(tool_grammar.grammar)
        # End-of-generation stays possible: a complete call grammar admits nothing else (and llama.cpp
        # aborts when generation goes on past it).
        sampling = dataclasses.replace(generation_request.sampling, grammar=tool_grammar.grammar,
                                       grammar_triggers=tool_grammar.triggers, ignore_eos=False)
        return dataclasses.replace(generation_request, sampling=sampling), family, text

    generation_request, family, prompt_text = await run_in_threadpool(prepare)
    if files:  # the prompt again, with its files, through libmtmd
        generation_request = await run_in_threadpool(media_parts.attach, engine, generation_request, prompt_text, files)
    requests = [generation_request]
    for i in range(1, n):
        # A fixed seed gives each choice its own, else the n choices would be one answer n times.
        seed = generation_request.sampling.seed
        requests.append(dataclasses.replace(generation_request, sampling=dataclasses.replace(
            generation_request.sampling, seed=seed + i if seed >= 0 else seed)))
    run = ChatRun(request, engine, holder.model_name, requests, family, formats, bool(body.stream))
    run.prompt_text = prompt_text
    return run


def render_chat(engine: ServingEngine, holder: EngineHolder, body: ChatCompletionRequest) -> tuple[str, list[int], Family, Any]:
    """The request's prompt as the model's template renders it (tools included), its tokens, the tool
    family whose calls the output is read for, and the grammar of the calls (None: no tools). Blocking."""
    try:
        tools = parse_tools(body.tools)
        choice = tool_choice(tools, body.tool_choice, body.parallel_tool_calls)
        family = detect(holder.formatter.template)
        messages, template_tools = template_messages(tr.chat_messages(body), family, choice, tools)
        tool_grammar = family.grammar(choice) if choice.mode != "none" else None
    except ToolRequestError as exc:
        raise ApiError(400, str(exc), param=exc.param) from None
    text = tr.chat_prompt_text(holder.formatter, body, messages, template_tools)
    return text, engine.tokenize(text, *tokenize_prompt_text(text, engine.bos_token)), family, tool_grammar


async def count_chat_tokens(request: Request, body: ChatCompletionRequest) -> int:
    """The prompt tokens a chat request would have (llama-server's /chat/completions/input_tokens)."""
    engine, holder = ready_engine(request)
    body, files = media_parts.extract(body, getattr(engine, "projector", None))
    text, tokens, _family, _grammar = await run_in_threadpool(render_chat, engine, holder, body)
    return await run_in_threadpool(media_parts.count, engine, text, files) if files else len(tokens)
