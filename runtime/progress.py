"""Progress on stderr for long work (loading weights, verifying them): a live percentage on a terminal,
a start and an end line otherwise, nothing with --log-disable."""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger(__name__)


class Progress:
    def __init__(self, label: str, enabled: bool) -> None:
        self._label = label
        self._enabled = enabled
        self._live = enabled and sys.stderr.isatty()
        self._started = time.perf_counter()
        self._shown = -1
        if enabled and not self._live:
            log.info("%s...", label)

    def update(self, fraction: float) -> None:
        percent = int(min(max(fraction, 0.0), 1.0) * 100)
        if self._live and percent != self._shown:
            self._shown = percent
            sys.stderr.write(f"\r{self._label}: {percent:3d}%")
            sys.stderr.flush()

    def done(self, detail: str = "") -> None:
        if not self._enabled:
            return
        elapsed = time.perf_counter() - self._started
        if self._live:
            sys.stderr.write("\r\033[K")
        log.info("%s: done in %.2f s%s", self._label, elapsed, f" ({detail})" if detail else "")
