"""A conversation bound to a model: token accounting, making room when the context fills, and
streaming a reply from a worker thread so that Ctrl-C can stop it between two tokens. The engine is only used through tokenize/generate/n_ctx, so tests can pass a
small fake one."""

from __future__ import annotations

import contextlib
import logging
import queue
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass

from .. import messages
from ..formats.chat_template import ChatFormatter, tokenize_prompt_text
from ..engine.interface import ChatEngine
from ..engine.types import GenerationRequest, Piece, SamplingParams, Timings
from ..errors import UserError
from ..flags.values import verbose_prompt_line
from .conversation import Conversation
from .thinking import ChatThinking, ReplySplitter

log = logging.getLogger(__name__)


class DoesNotFit(UserError):
    """The newest message alone (with the system prompt) leaves no room in the context."""

    notice = True  # "context full: ...": the chat says so and goes on; nothing failed


@dataclass(frozen=True)
class Usage:
    used: int
    n_ctx: int
    messages: int

    @property
    def free(self) -> int:
        return max(0, self.n_ctx - self.used)


@dataclass(frozen=True)
class Reply:
    text: str
    finish_reason: str  # "stop" | "length" | "cancelled" | "full" (the context filled up)
    timings: Timings | None
    dropped: int  # oldest messages dropped to make room before this reply
    thought: str = ""  # a thinking model's thought, apart from its answer (`text`)
    thought_tokens: int = 0


class ChatSession:
    def __init__(self, engine: ChatEngine, formatter: ChatFormatter, sampling: SamplingParams,
                 n_predict: int = -1, system: str | None = None, stop: tuple[str, ...] = (),
                 verbose_prompt: bool = False, thinking: bool = True, reasoning_format: str = "auto") -> None:
        self.engine = engine
        self.formatter = formatter
        self.sampling = sampling
        self.n_predict = n_predict
        self.stop = stop  # -r: stop strings besides the template's own
        self.verbose_prompt = verbose_prompt
        self.conversation = Conversation(system)
        self.last_timings: Timings | None = None
        # llama.cpp's chat library where the runtime carries it: the template as llama-server renders
        # it, and the reply split into thought and answer (runtime/chat/thinking.py).
        chat = formatter.llama_chat(engine) if hasattr(formatter, "llama_chat") else None
        self.thinking = ChatThinking(chat, thinking, reasoning_format) if chat is not None else None
        self._applied = None
        self.pending_media: list[str] = []  # /image, /audio (runtime/chat/attach.py): sent with the next message
        # Their bytes, read once when attached: the conversation keeps paths, and a file moved or changed
        # later must not change (or, gone, break) what the model already saw in every later turn.
        self._media_bytes: dict[str, bytes] = {}
        self._media = None  # the chunks of the last prompt's images and sounds (runtime/engine/multimodal.py)

    def attach(self, path: str, data: bytes) -> None:
        """An image or a sound (checked by the caller) for the next message."""
        self.pending_media.append(path)
        self._media_bytes[path] = data

    # -- tokens ----------------------------------------------------------------------------------

    def _tokens(self, add_generation_prompt: bool) -> list[int]:
        projector = getattr(self.engine, "projector", None)
        rendered = self.conversation.for_template(projector.marker if projector is not None else "")
        self._media = None
        if not rendered:
            return []
        if self.thinking is not None:
            self._applied = self.thinking.render(rendered, add_generation_prompt)
            text = self._applied.prompt
        else:
            text = self.formatter.render(rendered, add_generation_prompt=add_generation_prompt)
        add_special, parse_special = tokenize_prompt_text(text, self.engine.bos_token)
        files = self.conversation.media()
        if files:
            tokens, self._media = self.engine.tokenize_media(text, [self._media_bytes[path] for path in files],  # type: ignore[attr-defined]
                                                             add_special, parse_special)
            return tokens
        return self.engine.tokenize(text, add_special=add_special, parse_special=parse_special)

    def usage(self) -> Usage:
        return Usage(len(self._tokens(add_generation_prompt=False)), self.engine.n_ctx, len(self.conversation))

    def count_tokens(self, text: str) -> int:
        return len(self.engine.tokenize(text, add_special=False, parse_special=False))

    def reply_reserve(self) -> int:
        """Room kept free for the answer when deciding whether old turns must go."""
        wanted = self.n_predict if self.n_predict > 0 else 512
        return max(1, min(wanted, self.engine.n_ctx // 4))

    def make_room(self) -> tuple[list[int], int]:
        """The prompt for the next reply, after dropping the oldest exchanges if the conversation and
        the reserve for a reply no longer fit. Returns (prompt tokens, messages dropped). Raises
        DoesNotFit when even the newest message alone (with the system prompt) does not fit."""
        before = list(self.conversation.messages)
        dropped = 0
        tokens = self._tokens(add_generation_prompt=True)
        while len(tokens) + self.reply_reserve() > self.engine.n_ctx:
            gone = self.conversation.forget_oldest_exchange()
            if not gone:
                break
            dropped += gone
            tokens = self._tokens(add_generation_prompt=True)
        if len(tokens) >= self.engine.n_ctx:
            # Only now is it known that the newest message cannot fit at all: what was dropped to
            # find out comes back, since nothing will be sent.
            self.conversation.messages[:] = before
            raise DoesNotFit(messages.CHAT_MESSAGE_TOO_LONG.format(n_tokens=len(tokens), n_ctx=self.engine.n_ctx))
        return tokens, dropped

    # -- replies ---------------------------------------------------------------------------------

    def ask(self, text: str, on_text: Callable[[str], None],
            on_room_made: Callable[[int], None] = lambda dropped: None,
            on_thought: Callable[[str], None] | None = None) -> Reply:
        """Adds the user's message, streams the reply to `on_text`, and keeps what was said, even
        when Ctrl-C stopped it. A KeyboardInterrupt raised while waiting or inside `on_text` stops
        the generation at the next token; the partial reply is kept."""
        before = list(self.conversation.messages)
        media, self.pending_media = tuple(self.pending_media), []
        self.conversation.add("user", text, media)
        parts: list[str] = []
        try:
            tokens, dropped = self.make_room()
            if dropped:
                on_room_made(dropped)
            request = GenerationRequest(tuple(tokens), self.n_predict, self.sampling, (*self.formatter.stop, *self.stop),
                                        interactive=True,  # API traffic gives way to it in a full KV pool
                                        media=self._media)
            if self.verbose_prompt:
                text = self.formatter.render(self.conversation.for_template(), add_generation_prompt=True)
                log.info("%s", verbose_prompt_line(text, len(tokens)))
            splitter = ReplySplitter(self._applied, on_text, on_thought) if self.thinking is not None else None
            if splitter is not None:
                parts = splitter.answer
                last = stream_interruptibly(self.engine, request, lambda piece: splitter.feed(piece.text))
                splitter.finish()
            else:
                last = stream_interruptibly(self.engine, request,
                                            lambda piece: (parts.append(piece.text), on_text(piece.text)))
        except BaseException as exc:
            # Not answered at all (refused, failed, or stopped before a word): the conversation is the
            # user's, so it goes back exactly as it was, older turns dropped for room included.
            if not "".join(parts).strip():
                self.conversation.messages[:] = before
                # Stopped by Ctrl-C, its files stay attached for the next try; refused (an image too large
                # for the context), they go with the message, else every later message would fail alike.
                if isinstance(exc, KeyboardInterrupt):
                    self.pending_media = list(media)
            raise
        reply = "".join(parts)
        finish = last.finish_reason or "cancelled"
        if finish == "length" and last.timings and self._context_is_full(last.timings):
            finish = "full"
        if reply.strip():
            self.conversation.add("assistant", reply)
        self.last_timings = last.timings
        if splitter is not None:
            return Reply(reply, finish, last.timings, dropped, "".join(splitter.thought), splitter.thought_tokens)
        return Reply(reply, finish, last.timings, dropped)

    def _context_is_full(self, timings: Timings) -> bool:
        limit_hit = self.n_predict >= 0 and timings.generated_tokens >= self.n_predict
        return not limit_hit and timings.prompt_tokens + timings.generated_tokens >= self.engine.n_ctx


_DONE = object()


def stream_interruptibly(engine: ChatEngine, request: GenerationRequest,
                         on_piece: Callable[[Piece], object]) -> Piece:
    """Runs engine.generate in a worker thread and hands its pieces to `on_piece` in this thread.

    llama.cpp calls hold the calling thread in C, where Python cannot deliver a KeyboardInterrupt; the
    worker keeps the main thread free to take Ctrl-C at any moment, which sets the engine's cancel
    event: the generation stops cleanly at the next token (its KV cache stays consistent). While
    streaming, SIGINT only sets that event: a KeyboardInterrupt raised at a random point could land
    inside the queue's own locking and leave it locked (then both threads would wait forever). A
    KeyboardInterrupt from `on_piece` (or off the main thread) cancels too. Returns the last piece
    (finish reason, timings)."""
    cancel = threading.Event()
    pieces: queue.Queue = queue.Queue()

    def work() -> None:
        try:
            for piece in engine.generate(request, cancel):
                pieces.put(piece)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which re-raises it
            pieces.put(exc)
        finally:
            pieces.put(_DONE)

    worker = threading.Thread(target=work, name="chat-generate", daemon=True)
    last = Piece("", (), "cancelled", None)
    with _sigint_sets(cancel):
        worker.start()
        try:
            last, error = _drain(pieces, cancel, on_piece, last)
        except BaseException:
            # `on_piece` failed (e.g. nobody reads stdout any more): stop the worker before going on,
            # so that it never runs on an engine its owner is about to close.
            cancel.set()
            while pieces.get() is not _DONE:
                pass
            raise
        finally:
            worker.join()
    if error is not None:
        raise error
    return last


def _drain(pieces: queue.Queue, cancel: threading.Event, on_piece: Callable[[Piece], object],
           last: Piece) -> tuple[Piece, BaseException | None]:
    error: BaseException | None = None
    while True:
        try:
            item = pieces.get(timeout=0.1)
            if item is _DONE:
                break
            if isinstance(item, BaseException):
                error = item
                continue
            if item.finish_reason is not None:
                last = item
            if not cancel.is_set() or item.text:
                on_piece(item)
        except queue.Empty:
            continue
        except KeyboardInterrupt:
            cancel.set()  # keep draining: the worker ends at the next token with "cancelled"
    return last, error


@contextlib.contextmanager
def _sigint_sets(event: threading.Event):
    """Within: Ctrl-C (SIGINT) sets `event` instead of raising KeyboardInterrupt (main thread only,
    where Python runs signal handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: event.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
