"""Stop strings in streamed text."""

from __future__ import annotations

from typing import Sequence


class StopMatcher:
    """Finds stop strings in streamed text, holding back only a tail that could begin one.
    Work per piece is bounded by the longest stop string, not the completion's length."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [s for s in stops if s]
        self._hold = max((len(s) for s in self._stops), default=1) - 1
        self._pending = ""
        self.matched: str | None = None  # the stop string found, once one is

    def feed(self, text: str) -> tuple[str, bool]:
        """(text safe to show now, whether a stop string was found)."""
        if not self._stops:
            return text, False
        self._pending += text
        hits = [(i, s) for i, s in ((self._pending.find(s), s) for s in self._stops) if i >= 0]
        if hits:
            at, self.matched = min(hits, key=lambda hit: hit[0])
            out, self._pending = self._pending[:at], ""
            return out, True
        keep = self._longest_partial_suffix()
        out = self._pending[:len(self._pending) - keep]
        self._pending = self._pending[len(self._pending) - keep:]
        return out, False

    def _longest_partial_suffix(self) -> int:
        for size in range(min(self._hold, len(self._pending)), 0, -1):
            tail = self._pending[-size:]
            if any(stop.startswith(tail) for stop in self._stops):
                return size
        return 0

    def flush(self, text: str = "") -> str:
        out, self._pending = self._pending + text, ""
        return out
