"""What the front ends need of an engine, as Protocols: the chat and the server are written against these,
the real `Engine` satisfies them, and so must the tests' fakes (tests/test_engine_interface.py checks
all three), so a fake cannot drift from the engine it stands in for. No llama.cpp here."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from .types import EngineConfig, FimTokens, GenerationRequest, Piece


class ChatEngine(Protocol):
    """The chat's needs: token accounting and a stream of pieces."""

    n_ctx: int
    bos_token: str
    eos_token: str

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]: ...

    def generate(self, request: GenerationRequest, cancel: threading.Event | None = None) -> Iterator[Piece]: ...


class ServingEngine(ChatEngine, Protocol):
    """The HTTP server's needs: requests checked before they start, event-driven generation, the model's
    facts, token text for log-probabilities, embeddings."""

    n_ctx_train: int
    n_vocab: int
    n_embd: int
    model_name: str
    chat_template: str | None
    config: EngineConfig

    def check_grammar(self, grammar: str) -> None: ...

    def check_fits(self, n_prompt_tokens: int) -> None: ...

    def start(self, request: GenerationRequest, cancel: threading.Event, deliver: Callable[[Any], None]) -> None: ...

    def token_bytes(self, token: int, special: bool = False) -> bytes: ...

    def token_text(self, token: int) -> str: ...

    def detokenize(self, tokens: Sequence[int], special: bool = False) -> str: ...

    def embed(self, tokens: Sequence[int], normalize: bool = True) -> list[float]: ...

    # llama.cpp's native API (/infill, /embeddings, /rerank, /slots)
    fim_tokens: FimTokens
    pooling: str
    sequences_in_use: frozenset[int]

    def special_tokens(self) -> dict[str, int | None]: ...

    def embed_each(self, tokens: Sequence[int]) -> list[list[float]]: ...

    def close(self) -> None: ...
