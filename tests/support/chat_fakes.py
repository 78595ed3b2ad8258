"""A small fake engine for the chat's logic tests: real chat templates and formatter, a tokenizer of
one token per character, and scripted replies. Model-free, so tests of the conversation logic take
milliseconds; the real engine is exercised by the end-to-end tests."""

from __future__ import annotations

import threading
import time

from llmpack.runtime.chat.session import ChatSession
from llmpack.runtime.formats.chat_template import ChatFormatter, stop_strings_for
from llmpack.runtime.engine.types import (
    GenerationRequest,
    Piece,
    SamplingParams,
    Timings,
)

from support.tiny_model import GEMMA_TEMPLATE


class FakeEngine:
    bos_token = "<s>"
    eos_token = "</s>"

    def __init__(self, n_ctx: int = 4096, replies: list[str] | None = None, delay: float = 0.0) -> None:
        self.n_ctx = n_ctx
        self.replies = list(replies or ["a reply"])
        self.delay = delay
        self.requests: list[GenerationRequest] = []
        self.started = threading.Event()

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        return ([1] if add_special else []) + [ord(c) for c in text]

    def detokenize(self, tokens) -> str:
        return "".join(chr(t) for t in tokens if t > 1)

    def generate(self, request: GenerationRequest, cancel: threading.Event | None = None):
        self.requests.append(request)
        self.started.set()
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        generated, finish = 0, "stop"
        room = self.n_ctx - len(request.prompt_tokens)
        for word in reply.split(" "):
            if cancel is not None and cancel.is_set():
                finish = "cancelled"
                break
            if request.max_tokens >= 0 and generated >= request.max_tokens or generated >= room:
                finish = "length"
                break
            if self.delay:
                time.sleep(self.delay)
            generated += 1
            yield Piece(word if generated == 1 else " " + word, (generated,))
        yield Piece("", (), finish, Timings(len(request.prompt_tokens), 0, 10.0, generated, 20.0))


def make_session(engine: FakeEngine | None = None, system: str | None = None, n_predict: int = -1) -> ChatSession:
    engine = engine or FakeEngine()
    formatter = ChatFormatter(GEMMA_TEMPLATE, engine.bos_token, engine.eos_token, stop_strings_for(GEMMA_TEMPLATE))
    return ChatSession(engine, formatter, SamplingParams(temperature=0.0), n_predict, system=system)
