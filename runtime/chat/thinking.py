"""The terminal chat through llama.cpp's chat library (runtime/formats/llama_chat.py), where the runtime
carries it: the conversation rendered as llama-server renders it (thinking on or off: /think), and the
reply read as it streams into its thought and its answer, so the chat shows the thought set apart
(dimmed, then "thought for N tokens") and keeps only the answer in the conversation's text."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import messages
from ..formats.llama_chat import Applied, ChatStream


class ChatThinking:
    """One model's chat library and the chat's thinking switch."""

    def __init__(self, chat: Any, enabled: bool = True, reasoning_format: str = "auto") -> None:
        self.chat = chat
        self.enabled = enabled and chat.supports_thinking
        self.reasoning_format = reasoning_format

    @property
    def available(self) -> bool:
        return self.chat.supports_thinking

    def render(self, messages: list[dict[str, Any]], add_generation_prompt: bool) -> Applied:
        return self.chat.apply({"messages": messages, "add_generation_prompt": add_generation_prompt,
                                "enable_thinking": self.enabled, "reasoning_format": self.reasoning_format,
                                "chat_template_kwargs": {"preserve_reasoning": True, "enable_thinking": self.enabled}})


class ThoughtPrinter:
    """A thought on the terminal: dimmed as it streams, then "thought for N tokens" before the answer.
    Not shown when stdout is no terminal (a piped --chat writes only answers; --reasoning-format none
    leaves the thought in the answer's text for whoever wants it there)."""

    def __init__(self, console: Any) -> None:
        self.console = console
        self.shown = console.color or console.stream.isatty()
        self.pieces = 0

    def feed(self, text: str) -> None:
        if not self.shown:
            return
        self.pieces += 1
        self.console.styled([("class:thought", text)])

    def close(self) -> None:
        if self.pieces:
            self.console.write("\n")
            self.console.line(messages.CHAT_THOUGHT.format(n=self.pieces))
            self.pieces = 0


class ReplySplitter:
    """A reply's pieces in, its answer to `on_text` and its thought to `on_thought` as they come."""

    def __init__(self, applied: Applied, on_text: Callable[[str], None],
                 on_thought: Callable[[str], None] | None) -> None:
        self._stream: ChatStream = applied.stream(streaming=True, parse_tool_calls=False)
        self._on_text, self._on_thought = on_text, on_thought
        self.answer: list[str] = []
        self.thought: list[str] = []
        self.thought_tokens = 0
        self._thinking = False

    def _emit(self, diffs: list[dict[str, Any]]) -> None:
        for diff in diffs:
            if diff.get("reasoning_content"):
                self.thought.append(diff["reasoning_content"])
                if self._on_thought is not None:
                    self._on_thought(diff["reasoning_content"])
            if diff.get("content"):
                self.answer.append(diff["content"])
                self._on_text(diff["content"])

    def feed(self, text: str) -> None:
        """One token's text (counted as thought while no answer has come)."""
        if not self.answer:
            self.thought_tokens += 1
        self._emit(self._stream.feed(text))

    def finish(self) -> None:
        self._emit(self._stream.finish())
        self._stream.close()
        if not self.thought:
            self.thought_tokens = 0
