"""Images and audio in the sequence, through llama.cpp's libmtmd (tools/mtmd), as llama-server does it.

A projector GGUF (`mmproj-*.gguf`) turns an image or a sound into embeddings in the language model's
space. A prompt is the rendered chat text with a marker where each image or sound goes; libmtmd's
`mtmd_tokenize` splits it into chunks: text chunks (token ids) and media chunks (preprocessed pixels or
mel frames, encoded later). The scheduler sees one list of ids: a media chunk stands there as a run of
placeholder ids, one per position it takes, all equal to a negative number drawn from the media's
sha256. So the prompt cache's prefix match works unchanged: the same image in the next turn matches,
another image does not. When the scheduler reaches a placeholder run it asks the engine to encode and
decode that chunk into the sequence (`decode_media`, on the decoding thread, as llama-server's
`process_chunk`), between two token batches.

Only this module and native.py touch libmtmd.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import secrets
import weakref
from dataclasses import dataclass, field
from typing import Sequence

from ..errors import EngineFailure, UserError
from . import native
from .native import llama

log = logging.getLogger(__name__)

# What the user reads (tests import them).
MMPROJ_LOAD_FAILED = ("cannot load the projector {path}: it is no projector GGUF that libmtmd reads, or it was "
                      "made for another model (llama.cpp's log above says which)")
MMPROJ_NONE = "this model reads text only: it has no projector (llmpack build --mmproj FILE, or run with --mmproj FILE)"
MEDIA_MARKERS_MISMATCH = "the prompt holds {markers} media markers for {media} images or sounds"
MEDIA_UNREADABLE = "media {index}: libmtmd cannot decode it (not an image or a sound it reads, or damaged)"
MEDIA_TOKENIZE_FAILED = "the images or sounds could not be prepared for this model (libmtmd's status {status})"
MEDIA_LAST = "an image or a sound cannot end the prompt: text must follow it"

_mtmd = None


def _bindings():
    """llama-cpp-python's libmtmd bindings, imported on first use: a text-only start never loads them."""
    global _mtmd
    if _mtmd is None:
        _mtmd = importlib.import_module("llama_cpp.mtmd_cpp")
        if native._LOG_CALLBACK is not None:  # libmtmd's log to ours, as llama.cpp's
            _mtmd.mtmd_helper_log_set(native._LOG_CALLBACK, ctypes.c_void_p(0))
    return _mtmd


class MediaRejected(UserError):
    """An image or sound libmtmd could not read: a 400 for the server, one line for the terminal."""


@dataclass(frozen=True)
class MediaSpan:
    start: int  # index in the prompt's ids of the first placeholder
    length: int  # placeholders: the positions the chunk takes
    chunk_index: int
    kind: str  # "image" | "audio"


@dataclass(eq=False)
class MediaPrompt:
    """The chunks of one tokenized prompt (freed with it) and where each media chunk stands in its ids."""

    chunks: int  # an mtmd_input_chunks pointer
    spans: tuple[MediaSpan, ...]
    media_tokens: int = 0  # embeddings the media take in the KV cache
    _freed: bool = field(default=False, repr=False)

    def span_at(self, index: int) -> MediaSpan | None:
        return next((s for s in self.spans if s.start == index), None)

    def keep_before(self, keep: int) -> int:
        """A cached prefix never ends inside a media chunk: that chunk is decoded whole again."""
        for span in self.spans:
            if span.start < keep < span.start + span.length:
                return span.start
        return keep

    def free(self) -> None:
        if not self._freed and self.chunks:
            self._freed = True
            _bindings().mtmd_input_chunks_free(self.chunks)

    def __del__(self) -> None:
        try:
            self.free()
        except Exception:  # interpreter shutdown: the library may be gone already
            pass


def placeholder(media_id: bytes | None) -> int:
    """A negative id standing for one image or sound (never a vocabulary id), the same for the same bytes."""
    digest = (media_id or b"0")[:12]
    try:
        value = int(digest, 16)
    except ValueError:
        value = int.from_bytes(digest, "little")
    return -1 - (value % (2**31 - 2))


class Projector:
    """A loaded projector: libmtmd's context, bound to the language model it feeds."""

    def __init__(self, path: str, model, n_threads: int, use_gpu: bool, n_batch: int) -> None:
        mtmd = _bindings()
        params = mtmd.mtmd_context_params_default()
        params.use_gpu = use_gpu
        params.n_threads = n_threads
        params.print_timings = False
        params.warmup = False  # the first image pays for the graph; a start without images does not
        # A marker of our own per process, as llama-server's: a marker typed in a message's text is text.
        self.marker = f"<__media_{secrets.token_hex(8)}__>"
        self._marker_bytes = self.marker.encode()
        params.media_marker = self._marker_bytes
        self._ctx = mtmd.mtmd_init_from_file(path.encode(), model, params)
        if not self._ctx:
            raise EngineFailure(MMPROJ_LOAD_FAILED.format(path=path))
        self.path = path
        self.vision = bool(mtmd.mtmd_support_vision(self._ctx))
        self.audio = bool(mtmd.mtmd_support_audio(self._ctx))
        self.n_batch = n_batch

    def close(self) -> None:
        if self._ctx:
            _bindings().mtmd_free(self._ctx)
            self._ctx = None

    def tokenize(self, text: str, media: Sequence[bytes], add_special: bool, parse_special: bool) -> tuple[list[int], MediaPrompt]:
        """The prompt's ids (placeholders for media) and its chunks. Safe beside the decoding thread (as
        llama-server's HTTP threads tokenize): it decodes and preprocesses, computes nothing."""
        mtmd = _bindings()
        if text.count(self.marker) != len(media):
            raise MediaRejected(MEDIA_MARKERS_MISMATCH.format(markers=text.count(self.marker), media=len(media)))
        bitmaps = []
        try:
            for i, data in enumerate(media):
                buffer = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
                bitmap = mtmd.mtmd_helper_bitmap_init_from_buf(self._ctx, buffer, len(data), False)
                if not bitmap:
                    raise MediaRejected(MEDIA_UNREADABLE.format(index=i))
                bitmaps.append(bitmap)
            chunks = mtmd.mtmd_input_chunks_init()
            encoded = text.encode("utf-8")
            part = mtmd.mtmd_input_text(encoded, len(encoded), add_special, parse_special)
            array = (mtmd.mtmd_bitmap_p_ctypes * max(1, len(bitmaps)))(*bitmaps)
            status = mtmd.mtmd_tokenize(self._ctx, chunks, ctypes.byref(part), array, len(bitmaps))
            prompt = MediaPrompt(chunks, ())
            if status != 0:
                raise MediaRejected(MEDIA_TOKENIZE_FAILED.format(status=status))
            return self._ids(prompt)
        finally:
            for bitmap in bitmaps:
                mtmd.mtmd_bitmap_free(bitmap)

    def _ids(self, prompt: MediaPrompt) -> tuple[list[int], MediaPrompt]:
        mtmd = _bindings()
        ids: list[int] = []
        spans: list[MediaSpan] = []
        media_tokens = 0
        for i in range(mtmd.mtmd_input_chunks_size(prompt.chunks)):
            chunk = mtmd.mtmd_input_chunks_get(prompt.chunks, i)
            kind = mtmd.mtmd_input_chunk_get_type(chunk)
            if kind == mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT:
                count = ctypes.c_size_t(0)
                tokens = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(count))
                ids.extend(tokens[:count.value])
                continue
            n_pos = mtmd.mtmd_input_chunk_get_n_pos(chunk)
            media_tokens += mtmd.mtmd_input_chunk_get_n_tokens(chunk)
            spans.append(MediaSpan(len(ids), n_pos, i, "audio" if kind == mtmd.MTMD_INPUT_CHUNK_TYPE_AUDIO else "image"))
            ids.extend([placeholder(mtmd.mtmd_input_chunk_get_id(chunk))] * n_pos)
        prompt.spans, prompt.media_tokens = tuple(spans), media_tokens
        if spans and spans[-1].start + spans[-1].length == len(ids):
            # The last position's logits are what generation samples from; a chunk of embeddings has none
            # here (llama-server's prompts end in the template's text too).
            raise MediaRejected(MEDIA_LAST)
        return ids, prompt

    def decode(self, context, prompt: MediaPrompt, span: MediaSpan, seq: int, position: int) -> int:
        """Encodes the span's chunk and decodes its embeddings into `seq` from `position`, on the decoding
        thread. Returns llama_decode's status (0: done)."""
        mtmd = _bindings()
        chunk = mtmd.mtmd_input_chunks_get(prompt.chunks, span.chunk_index)
        new_position = llama.llama_pos(position)
        return mtmd.mtmd_helper_eval_chunk_single(self._ctx, context, chunk, position, seq, self.n_batch, False,
                                                  ctypes.byref(new_position))


def describe(projector: Projector | None) -> str:
    if projector is None:
        return ""
    kinds = [k for k, on in (("images", projector.vision), ("audio", projector.audio)) if on]
    return " and ".join(kinds) or "nothing"


class MediaMethods:
    """The engine's multimodal half: a mixin of `Engine` (as TokenMethods), so the engine's module stays
    about loading and generating. `projector` is None for a text-only start."""

    projector: Projector | None = None
    model: object
    context: object
    vocab: object
    config: object

    def _load_projector(self) -> None:
        config = self.config
        if config.mmproj:
            self.projector = Projector(config.mmproj, self.model, config.n_threads, config.mmproj_offload,
                                       config.n_batch)
            # Freed with the engine (libmtmd keeps no pointer into the model's memory it frees).
            weakref.finalize(self, self.projector.close)

    def _close_projector(self) -> None:
        if self.projector is not None:
            self.projector.close()
            self.projector = None

    def tokenize_media(self, text: str, media: Sequence[bytes], add_special: bool = True,
                       parse_special: bool = False) -> tuple[list[int], MediaPrompt | None]:
        """`text` with the projector's marker where each of `media` goes: its ids (placeholders for the
        media) and the chunks a GenerationRequest carries in `media`. Raises MediaRejected."""
        if not media:
            return self.tokenize(text, add_special, parse_special), None  # type: ignore[attr-defined]
        if self.projector is None:
            raise MediaRejected(MMPROJ_NONE)
        return self.projector.tokenize(text, media, add_special, parse_special)

    def decode_media(self, prompt: MediaPrompt, span: MediaSpan, seq: int, position: int) -> int:
        """For the scheduler, on its decoding thread: one media chunk into `seq` from `position`."""
        return self.projector.decode(self.context, prompt, span, seq, position)  # type: ignore[union-attr]
