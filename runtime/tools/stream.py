"""One choice's output split into text and tool calls as it streams: text is passed on as soon as it
cannot be the start of a call; what may be a call is held until the generation ends, then read by the
family's parser (calls), or passed on as text when it is none."""

from __future__ import annotations

from dataclasses import dataclass

from .families import Family


@dataclass(frozen=True)
class Call:
    id: str
    name: str
    arguments: str


class CallSplitter:
    def __init__(self, family: Family) -> None:
        self.family = family
        self._text = ""
        self._shown = 0

    def feed(self, text: str) -> str:
        """The text that may be shown now."""
        self._text += text
        shown = max(self._shown, min(self.family.shown(self._text), len(self._text)))
        out, self._shown = self._text[self._shown:shown], shown
        return out

    def finish(self) -> tuple[str, list[Call]]:
        """(text still to show, the calls) once the generation has ended."""
        parsed = self.family.parser(self._text)
        if parsed is None:  # no call: the words as they came
            return self._text[self._shown:], []
        # The answer's text (before the calls, or the generic family's "response"), less what was shown.
        calls = [Call(self.family.new_id(), c.name, c.arguments) for c in parsed.calls]
        return parsed.content[self._shown:], calls
