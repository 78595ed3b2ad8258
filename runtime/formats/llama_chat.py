"""llama.cpp's chat library through libllmpack-chat (build/chat-shim/): chat templates rendered, tool-call
grammars made and model output parsed (content, reasoning, tool calls, streamed) exactly as llama-server
does, for every format llama.cpp knows. JSON in, JSON out; the library sits beside libllama
(llama_cpp/lib), built from the same llama.cpp, and is loaded on first use, not at import.

    chat = LlamaChat.from_model(engine.model)              # or LlamaChat.from_template(text, bos, eos)
    applied = chat.apply({"messages": [...], "tools": [...], ...})   # prompt, grammar, parser...
    stream = applied.stream(streaming=True)
    for piece in pieces: handle(stream.feed(piece.text))   # the deltas llama-server would send
    message = stream.finish()                              # {"content", "reasoning_content", "tool_calls"}
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import json
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

LIBRARY = {"darwin": "libllmpack-chat.dylib", "win32": "llmpack-chat.dll"}.get(sys.platform, "libllmpack-chat.so")
# llama.cpp's grammar trigger types (common.h: common_grammar_trigger_type)
TRIGGER_TOKEN, TRIGGER_WORD, TRIGGER_PATTERN, TRIGGER_PATTERN_FULL = 0, 1, 2, 3

_lib: ctypes.CDLL | None = None
_lock = threading.Lock()


class ChatLibraryMissing(RuntimeError):
    """libllmpack-chat is not beside libllama (a runtime built without it)."""


class ChatFormatError(ValueError):
    """llama.cpp's chat library refused the request or the template (its message, one line)."""


def library_path() -> Path | None:
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.origin:
        return None
    path = Path(spec.origin).resolve().parent / "lib" / LIBRARY
    return path if path.is_file() else None


def available() -> bool:
    return library_path() is not None


def _library() -> ctypes.CDLL:
    global _lib
    with _lock:
        if _lib is None:
            path = library_path()
            if path is None:
                raise ChatLibraryMissing(f"{LIBRARY} not found beside libllama (build/chat-shim.sh builds it)")
            # libllama first, by the path the engine's bindings load it from (the runtime carries it
            # under that name only): the shim's libllama.so.0 is then that very library, by its SONAME.
            for engine in ("libllama.so", "libllama.dylib", "llama.dll"):
                if (path.parent / engine).is_file():
                    ctypes.CDLL(str(path.parent / engine))
                    break
            lib = ctypes.CDLL(str(path))
            p, s = ctypes.c_void_p, ctypes.c_char_p
            err = ctypes.POINTER(ctypes.c_void_p)
            lib.llmpack_chat_templates_new.argtypes = [p, s, s, s, err]
            lib.llmpack_chat_templates_new.restype = p
            lib.llmpack_chat_templates_free.argtypes = [p]
            lib.llmpack_chat_templates_info.argtypes = [p]
            lib.llmpack_chat_templates_info.restype = p
            lib.llmpack_chat_apply.argtypes = [p, s]
            lib.llmpack_chat_apply.restype = p
            lib.llmpack_chat_stream_new.argtypes = [s, err]
            lib.llmpack_chat_stream_new.restype = p
            lib.llmpack_chat_stream_free.argtypes = [p]
            lib.llmpack_chat_stream_feed.argtypes = [p, s, ctypes.c_size_t, ctypes.c_int]
            lib.llmpack_chat_stream_feed.restype = p
            lib.llmpack_chat_string_free.argtypes = [p]
            if hasattr(lib, "llmpack_chat_reasoning_budget"):
                lib.llmpack_chat_reasoning_budget.argtypes = [p, s]
                lib.llmpack_chat_reasoning_budget.restype = p
            floats, i32 = ctypes.POINTER(ctypes.c_float), ctypes.c_int32
            for name, argtypes, restype in (("llmpack_greedy_token", [p, i32], i32),
                                            ("llmpack_greedy_token_biased", [p, i32, ctypes.POINTER(i32), floats, i32], i32),
                                            ("llmpack_sample_top_k", [p, p, i32, i32], i32),
                                            ("llmpack_top_share", [p, i32, i32], ctypes.c_float),
                                            ("llmpack_logprobs", [p, i32, i32, i32, ctypes.POINTER(ctypes.c_double),
                                                                  ctypes.POINTER(i32), ctypes.POINTER(ctypes.c_double)], i32),
                                            ("llmpack_log_total_of", [floats, i32], ctypes.c_double),
                                            ("llmpack_first_argmax", [floats, i32], i32),
                                            ("llmpack_top_share_of", [floats, i32, i32], ctypes.c_float),
                                            ("llmpack_top_candidates", [floats, i32, i32, ctypes.POINTER(i32)],
                                             ctypes.c_bool)):
                if hasattr(lib, name):  # a library built before them has none of them
                    getattr(lib, name).argtypes = argtypes
                    getattr(lib, name).restype = restype
            _lib = lib
        return _lib


def _take(lib: ctypes.CDLL, pointer: int | None) -> str:
    """The library's malloc'd string, freed."""
    if not pointer:
        raise ChatFormatError("llama.cpp's chat library returned nothing")
    try:
        return ctypes.string_at(pointer).decode("utf-8", errors="replace")
    finally:
        lib.llmpack_chat_string_free(pointer)


def _call_json(lib: ctypes.CDLL, pointer: int | None) -> dict[str, Any]:
    out = json.loads(_take(lib, pointer))
    if "error" in out:
        raise ChatFormatError(" ".join(str(out["error"]).split()))
    return out


def _encode(value: Any) -> bytes:
    try:
        return json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\ud800"): no UTF-8 text can hold it
        raise ChatFormatError("the text holds a lone surrogate, which is no Unicode character") from None


def reasoning_budget_sampler(vocab: Any, params: str) -> int | None:
    """llama.cpp's reasoning budget sampler (a llama_sampler *, for the front of a sampler chain, which
    then owns it) from `params` (JSON: start, ends, message, budget, prefill); None where it cannot be
    made. The thought is closed after `budget` tokens, as llama-server closes it."""
    lib = _library()
    if not hasattr(lib, "llmpack_chat_reasoning_budget"):
        return None
    return lib.llmpack_chat_reasoning_budget(ctypes.cast(vocab, ctypes.c_void_p), params.encode()) or None


class LogitReads(NamedTuple):
    """The library's reads of one output's logits (a context and its batch index), without llama.cpp's
    3 MB copy of them per token (build/chat-shim/llmpack_sample.cpp); each gives -1 where it cannot."""

    greedy_token: Callable[[Any, int], int]  # (context, index): what a chain of the greedy sampler picks
    greedy_token_biased: Callable[[Any, int, Any, Any, int], int]  # (context, index, tokens, biases, n): the
    # same after a logit-bias sampler (ctypes arrays of int32 and float)
    sample_top_k: Callable[[Any, Any, int, int], int]  # (chain, context, index, k): the chain picks among the top k
    top_share: Callable[[Any, int, int], float]  # (context, index, k): the top token's share among the top k
    logprobs: Callable[[Any, int, int, int], tuple[float, tuple[tuple[int, float], ...]] | None]
    # (context, index, token, n): the token's log-probability and the n most likely tokens with theirs


def _logprobs(lib: ctypes.CDLL) -> Callable[[Any, int, int, int], tuple[float, tuple[tuple[int, float], ...]] | None]:
    def logprobs(context: Any, index: int, token: int, top: int):
        value, tokens, values = ctypes.c_double(), (ctypes.c_int32 * max(top, 1))(), (ctypes.c_double * max(top, 1))()
        if lib.llmpack_logprobs(context, index, token, top, ctypes.byref(value), tokens, values) < 0:
            return None
        return value.value, tuple(zip(tokens[:top], values[:top]))

    return logprobs


@functools.cache  # once a process: asked for every request's sampler and every log-probability
def logit_reads() -> LogitReads | None:
    """The library's LogitReads; None where it has none (no library, or one built before them)."""
    try:
        lib = _library()
    except ChatLibraryMissing:
        return None
    if not hasattr(lib, "llmpack_greedy_token_biased"):
        return None
    return LogitReads(lib.llmpack_greedy_token, lib.llmpack_greedy_token_biased, lib.llmpack_sample_top_k,
                      lib.llmpack_top_share, _logprobs(lib))


# The same reads over any list, for tests.
def _floats(values: list[float]):
    return (ctypes.c_float * len(values))(*values), len(values)


def first_argmax(values: list[float]) -> int:
    """The first index of the largest, NaN never winning."""
    return _library().llmpack_first_argmax(*_floats(values))


def log_total(values: list[float]) -> float:
    """The log of the softmax's denominator."""
    return _library().llmpack_log_total_of(*_floats(values))


def top_share(values: list[float], k: int) -> float:
    """The share of the largest among the k largest."""
    return _library().llmpack_top_share_of(*_floats(values), k)


def top_candidates(values: list[float], k: int) -> list[int] | None:
    """The k largest values' indices in the order the chain gets them; None where fewer than k are
    above -inf."""
    out = (ctypes.c_int32 * k)()
    return list(out) if _library().llmpack_top_candidates(*_floats(values), k, out) else None


class LlamaChat:
    """One model's chat templates (the GGUF's default and tool_use ones, or an override)."""

    def __init__(self, handle: int, lib: ctypes.CDLL) -> None:
        self._handle, self._lib = handle, lib
        self.info = _call_json(lib, lib.llmpack_chat_templates_info(handle))

    @classmethod
    def _new(cls, model: Any, template: str | None, bos: str, eos: str) -> LlamaChat:
        lib = _library()
        error = ctypes.c_void_p()
        handle = lib.llmpack_chat_templates_new(model, (template or "").encode(), bos.encode(), eos.encode(),
                                                ctypes.byref(error))
        if not handle:
            reason = _take(lib, error.value) if error.value else "the template could not be read"
            raise ChatFormatError(" ".join(reason.split()))
        return cls(handle, lib)

    @classmethod
    def from_model(cls, model: Any, override: str | None = None) -> LlamaChat:
        """The model's templates, BOS and EOS, as llama-server reads them (`model`: a llama_model *)."""
        return cls._new(ctypes.cast(model, ctypes.c_void_p), override, "", "")

    @classmethod
    def from_template(cls, template: str, bos: str = "", eos: str = "") -> LlamaChat:
        return cls._new(None, template, bos, eos)

    @property
    def supports_thinking(self) -> bool:
        return bool(self.info.get("supports_thinking"))

    def apply(self, request: dict[str, Any]) -> Applied:
        """An OpenAI chat body (messages, tools, tool_choice, parallel_tool_calls, chat_template_kwargs,
        reasoning_effort, add_generation_prompt...) plus the server's defaults (enable_thinking,
        reasoning_format) rendered and prepared as llama-server does. Raises ChatFormatError."""
        out = _call_json(self._lib, self._lib.llmpack_chat_apply(self._handle, _encode(request)))
        return Applied(out)

    def close(self) -> None:
        if self._handle:
            self._lib.llmpack_chat_templates_free(self._handle)
            self._handle = 0

    def __del__(self) -> None:
        self.close()


@dataclass(frozen=True)
class Applied:
    """What llama.cpp's chat library made of a request: the prompt, and what generating and parsing
    its answer needs."""

    data: dict[str, Any]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.data[name]
        except KeyError:
            raise AttributeError(name) from None

    def stream(self, streaming: bool = True, parse_tool_calls: bool | None = None) -> ChatStream:
        params = {k: self.data[k] for k in ("format", "parser", "generation_prompt", "reasoning_format",
                                             "is_continuation") if k in self.data}
        params["parse_tool_calls"] = self.data.get("parse_tool_calls", False) if parse_tool_calls is None else parse_tool_calls
        params["stream"] = streaming
        return ChatStream(params)


class ChatStream:
    """One generation's output parsed as it grows: feed() gives the deltas llama-server streams
    ({"content"}, {"reasoning_content"}, tool calls as {"index", "id", "name"} then {"index",
    "arguments"}); finish() gives the last deltas' message."""

    def __init__(self, params: dict[str, Any]) -> None:
        self._lib = _library()
        error = ctypes.c_void_p()
        self._handle = self._lib.llmpack_chat_stream_new(_encode(params), ctypes.byref(error))
        if not self._handle:
            raise ChatFormatError(_take(self._lib, error.value) if error.value else "bad parser parameters")
        self.message: dict[str, Any] | None = None

    def _feed(self, text: str, partial: bool) -> dict[str, Any]:
        data = text.encode("utf-8", errors="replace")
        return _call_json(self._lib, self._lib.llmpack_chat_stream_feed(self._handle, data, len(data), int(partial)))

    def feed(self, text: str) -> list[dict[str, Any]]:
        return self._feed(text, True)["diffs"]

    def finish(self, text: str = "") -> list[dict[str, Any]]:
        out = self._feed(text, False)
        self.message = out["message"]
        return out["diffs"]

    def close(self) -> None:
        if self._handle:
            self._lib.llmpack_chat_stream_free(self._handle)
            self._handle = 0

    def __del__(self) -> None:
        self.close()
