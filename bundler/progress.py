"""Byte progress on stderr: a live percentage and rate on a terminal, nothing otherwise."""

from __future__ import annotations

import sys
import time


class ByteProgress:
    def __init__(self, label: str, enabled: bool = True) -> None:
        self._label = label
        self._live = enabled and sys.stderr.isatty()
        self._started = time.perf_counter()
        self._shown = -1

    def update(self, done: int, total: int) -> None:
        percent = done * 100 // total if total else 100
        if self._live and percent != self._shown:
            self._shown = percent
            rate = done / max(time.perf_counter() - self._started, 1e-6) / 1e6
            sys.stderr.write(f"\r{self._label}: {percent:3d}% ({done / 1e6:.0f}/{total / 1e6:.0f} MB, {rate:.0f} MB/s)")
            sys.stderr.flush()

    def done(self) -> None:
        if self._live:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
