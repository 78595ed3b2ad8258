"""Errors a user can cause and fix. `__main__` prints them as one line on stderr and exits non-zero."""

from __future__ import annotations

from . import messages
from .engine.context_size import ContextSize


class UserError(Exception):
    """An error whose message is meant for the user; never shown with a traceback."""

    exit_code = 1


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

    `size` says how the context came about (-c divided among -np, capped at the model's training
    context), so the message names the flags that change it; without it the limit is one batch's."""

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
