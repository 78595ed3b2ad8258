"""SIGTERM and SIGHUP (a `kill`, a closed terminal, a stopped service) end a command the way Ctrl-C
does: as an exception in the main thread, so that every `with`/`finally` on the way out removes its
temporary files (bundle.atomic_output's `.partial`, a merge folder, a quantized GGUF) before exiting.
Without this, Python dies at once on those signals and leaves a half-written file the size of the
weights."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

# SIGHUP does not exist on Windows.
SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


class Terminated(BaseException):
    """Raised in the main thread by SIGTERM or SIGHUP. A BaseException, like KeyboardInterrupt, so
    that `except Exception` handlers on the way do not swallow it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # what a shell reports for a process killed by the signal


def _raise(signum: int, frame: object) -> None:
    # A second signal must not interrupt the clean-up of the first: ignore the rest.
    for other in SIGNALS:
        signal.signal(other, signal.SIG_IGN)
    raise Terminated(signum)


@contextlib.contextmanager
def terminate_as_exception() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise Terminated; the previous handlers come back after."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
    # A signal ignored by whoever started us (nohup ignores SIGHUP) stays ignored.
    for signum, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(signum, _raise)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
