"""A conversation as the user sees it: a system prompt, messages, and save points. No engine, no
terminal: every chat command's effect on the conversation lives here and is tested directly."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Message:
    role: str  # "user" | "assistant"
    content: str
    media: tuple[str, ...] = ()  # images and sounds (/image, /audio) sent with it, by path


@dataclass(frozen=True)
class SavePoint:
    system: str | None
    messages: tuple[Message, ...]
    label: str
    saved_at: float = field(default_factory=time.time)


class Conversation:
    def __init__(self, system: str | None = None) -> None:
        self.system = system or None
        self.messages: list[Message] = []
        self.stack: list[SavePoint] = []

    def __len__(self) -> int:
        return len(self.messages)

    def add(self, role: str, content: str, media: tuple[str, ...] = ()) -> None:
        self.messages.append(Message(role, content, media))

    def media(self) -> list[str]:
        """The files of the messages kept, in the order their markers come in the rendered prompt."""
        return [path for message in self.messages for path in message.media]

    def for_template(self, marker: str = "") -> list[dict[str, str]]:
        """The messages a chat template renders: the system prompt first, and consecutive messages of
        one role merged (an uploaded file and the question after it, or a question whose reply was
        interrupted before its first word), since strict templates (Gemma's) require alternation.
        A message's images and sounds come first in it, each as the projector's `marker`."""
        merged: list[dict[str, str]] = []
        for message in self.messages:
            content = "".join(marker + "\n" for _ in message.media) + message.content
            if merged and merged[-1]["role"] == message.role:
                merged[-1]["content"] += "\n\n" + content
            else:
                merged.append({"role": message.role, "content": content})
        if self.system:
            merged.insert(0, {"role": "system", "content": self.system})
        return merged

    def clear(self) -> int:
        """Drops every message, keeps the system prompt (and the save points). Returns how many went."""
        count = len(self.messages)
        self.messages.clear()
        return count

    def undo(self) -> int:
        """Drops the last exchange: the last user message and whatever followed it."""
        for index in range(len(self.messages) - 1, -1, -1):
            if self.messages[index].role == "user":
                # Consecutive user messages (an upload, then a question) are one turn for the model.
                while index > 0 and self.messages[index - 1].role == "user":
                    index -= 1
                count = len(self.messages) - index
                del self.messages[index:]
                return count
        count = len(self.messages)
        self.messages.clear()
        return count

    def forget(self) -> int:
        """Drops the oldest message; a reply left at the front goes with it, since templates expect
        a conversation to open with the user."""
        if not self.messages:
            return 0
        count = 1
        del self.messages[0]
        while self.messages and self.messages[0].role == "assistant":
            del self.messages[0]
            count += 1
        return count

    def forget_oldest_exchange(self) -> int:
        """Drops the oldest user turn and its reply, never the last user message (the one about to be
        answered). Returns how many messages went (0: nothing older is left to drop)."""
        last_user = max((i for i, m in enumerate(self.messages) if m.role == "user"), default=-1)
        first_reply = next((i for i, m in enumerate(self.messages) if m.role == "assistant"), None)
        if first_reply is None or first_reply > last_user:
            return 0
        end = first_reply
        while end < len(self.messages) and self.messages[end].role == "assistant":
            end += 1
        del self.messages[:end]
        return end

    def push(self, label: str = "") -> SavePoint:
        point = SavePoint(self.system, tuple(self.messages), label or f"#{len(self.stack) + 1}")
        self.stack.append(point)
        return point

    def pop(self) -> SavePoint | None:
        """Restores the latest save point and removes it from the stack."""
        if not self.stack:
            return None
        point = self.stack.pop()
        self.system, self.messages = point.system, list(point.messages)
        return point

    def transcript(self) -> str:
        """The conversation as plain text, for /dump."""
        parts = []
        if self.system:
            parts.append(f"### system\n{self.system}")
        parts += [f"### {m.role}\n" + "".join(f"[{path}]\n" for path in m.media) + m.content for m in self.messages]
        return "\n\n".join(parts) + ("\n" if parts else "")
