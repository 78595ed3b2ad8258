"""Errors a user can cause and fix. `__main__` prints them as one line on stderr and exits non-zero.

The one place that adds "error: " and "warning: " to what messages.py stores: `error_line` for the
printers at the edge (`__main__.main()`, the chat's console) and `EdgeFormatter` for logged warnings.
"""

from __future__ import annotations

import logging
import os

from . import messages
from .engine.context_size import ContextSize

ERROR_PREFIX = "error: "
WARNING_PREFIX = "warning: "
DEBUG_VARIABLE = "LLMPACK_DEBUG"
# Our loggers are named after our modules; llama.cpp's and uvicorn's records keep their own text.
_OWN_LOGGERS = __name__.partition(".")[0]


class UserError(Exception):
    """An error whose message is meant for the user; never shown with a traceback."""

    exit_code = 1
    # A notice (the chat's "context full") is shown as it is; an error gets "error: " at the edge.
    notice = False


def error_line(message: str) -> str:
    return ERROR_PREFIX + message


def user_line(exc: UserError) -> str:
    """How a printer at the edge shows a UserError."""
    return str(exc) if exc.notice else error_line(str(exc))


def debug_requested() -> bool:
    """LLMPACK_DEBUG=1: tracebacks for every error, before any flag is parsed (as in `llmpack`)."""
    return bool(os.environ.get(DEBUG_VARIABLE))


class EdgeFormatter(logging.Formatter):
    """Our own warnings read "warning: ..." on stderr and in --log-file."""

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno == logging.WARNING and record.name.partition(".")[0] == _OWN_LOGGERS:
            record = logging.makeLogRecord({**record.__dict__, "msg": WARNING_PREFIX + record.getMessage(), "args": None})
        return super().format(record)


class UsageError(UserError):
    """A bad flag or flag value."""

    exit_code = 2


class ModelNotFound(UserError):
    def __init__(self, path: str, reason: str) -> None:
        super().__init__(messages.MODEL_UNREADABLE.format(path=path, reason=reason))


class NotAGguf(UserError):
    def __init__(self, path: str) -> None:
        super().__init__(messages.NOT_A_GGUF.format(path=path))


class ModelLoadFailed(UserError):
    def __init__(self, path: str) -> None:
        super().__init__(messages.MODEL_LOAD_FAILED.format(path=path))


class CorruptBundle(UserError):
    def __init__(self, path: str, reason: str) -> None:
        super().__init__(messages.CORRUPT_BUNDLE.format(path=path, reason=reason))


class NoModel(UserError):
    def __init__(self) -> None:
        super().__init__(messages.NO_MODEL)


class ContextOverflow(UserError):
    """The prompt (plus what must still be generated) does not fit in the context window.

    `size` says how the context came about (-c divided among -np), so the message names the flags that
    change it; without it the limit is one batch's."""

    def __init__(self, n_prompt_tokens: int, n_ctx: int, size: ContextSize | None = None) -> None:
        self.n_prompt_tokens = n_prompt_tokens
        self.n_ctx = n_ctx
        if size is None:
            message = messages.PROMPT_TOO_LONG_FOR_BATCH.format(n_prompt=n_prompt_tokens, n_ctx=n_ctx)
        else:
            message = messages.PROMPT_TOO_LONG.format(
                n_prompt=n_prompt_tokens, n_ctx=n_ctx, per_sequence=" per sequence" if size.n_seq > 1 else "",
                origin=size.origin(n_ctx), remedy=size.remedy())
        super().__init__(message)


class PromptFileUnreadable(UserError):
    def __init__(self, path: str, reason: str) -> None:
        super().__init__(messages.PROMPT_FILE_UNREADABLE.format(path=path, reason=reason))


class EngineFailure(UserError):
    """llama.cpp refused an operation (e.g. decode failed); reported, never a traceback."""


class EngineUnavailable(EngineFailure):
    """The engine can no longer compute (an RPC worker was lost): the server answers 503 until restarted."""


class KvPoolFull(EngineUnavailable):
    """The KV pool shared by the sequences has no room for a request's prompt (runtime/engine/pool.py):
    503, which clients retry."""


class GrammarInvalid(EngineFailure):
    """A GBNF grammar (--grammar, or a request's) that grammar/check.py or llama.cpp refused: the user's
    to fix. `reason` is the checker's, when it found one."""

    def __init__(self, reason: str | None = None) -> None:
        self.reason = reason
        super().__init__(messages.GRAMMAR_REFUSED.format(reason=reason) if reason else messages.GRAMMAR_INVALID)


class GrammarFlagInvalid(UsageError):
    """--grammar or --grammar-file names a grammar that is refused: exit 2, before the model loads."""

    def __init__(self, flag: str, reason: str) -> None:
        super().__init__(messages.GRAMMAR_FLAG_REFUSED.format(flag=flag, reason=reason))
