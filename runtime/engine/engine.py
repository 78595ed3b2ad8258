"""The engine: the only module that talks to llama.cpp (through llama-cpp-python's ctypes bindings).

Front ends (CLI, chat, server) hand it `GenerationRequest`s and consume a stream of `Piece`s. It uses the
low-level API directly (batches, per-request sampler chains, the KV cache's sequences) rather than
llama-cpp-python's `Llama` class, because `Llama` only loads from a path and is one sequence at a time:
we load the weights in place from inside our own executable, and the server batches requests
(continuous batching: runtime/engine/scheduler.py drives the primitives below from one decoding thread).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import threading
import time
from typing import Callable, Iterator, Sequence

from .. import messages
from ..errors import (
    ContextOverflow,
    EngineFailure,
    EngineUnavailable,
    GrammarInvalid,
    ModelLoadFailed,
)
from . import devices, draft_model, offload, rpc
from .context_size import ContextSize
from .native import (
    FLASH_ATTN_TYPES,
    CFile,
    llama,
    load_backends,
)
from .sampler import SamplerChain, check_grammar_text
from .embeddings import EmbeddingMethods
from .logprobs import log_probabilities
from .scheduler import Scheduler
from .slots import SchedulerStats
from .tokens import TokenMethods
from .multimodal import MediaMethods
from .types import (
    KV_CACHE_TYPES,
    POOLING_TYPES,
    QUANTIZED_CACHE_TYPES,
    EngineConfig,
    FimTokens,
    GenerationRequest,
    ModelSource,
    Piece,
    SamplingParams,
    TokenLogprob,
)

log = logging.getLogger(__name__)


class Engine(TokenMethods, EmbeddingMethods, MediaMethods):
    """A loaded model and its context. `generate` and `embed` are safe to call from many threads at
    once: every request joins the running batch of the one decoding thread (runtime/engine/scheduler.py)."""

    def __init__(self, source: ModelSource, config: EngineConfig,
                 progress: Callable[[float], None] | None = None) -> None:
        load_backends()
        self.config = config
        self._file: CFile | None = None
        self._progress_callback = None
        self._device_arrays: list[ctypes.Array] = []  # -dev and -ts, referenced while llama.cpp loads
        if config.rpc_servers:
            rpc.connect_workers(config.rpc_servers)  # once per process: plan.resolve connected already
        self.model = self._load_model(source, config, progress)
        self.vocab = llama.llama_model_get_vocab(self.model)
        self._piece_cache: tuple[dict[int, bytes], dict[int, bytes]] = ({}, {})  # by `special`
        self._eog_cache: dict[int, bool] = {}
        self.n_ctx_train = llama.llama_model_n_ctx_train(self.model)
        self.metadata = self._read_metadata()
        if config.pooling == "rank" and not self._has_rank_head():
            # llama.cpp aborts the process when it builds a rank-pooled graph without a classifier.
            self.close()
            raise EngineFailure(messages.RERANK_NEEDS_RERANKER)
        try:
            with offload.abort_as_one_line(self.offload, self._offload_words):
                self.context = self._create_context(config)
            self._load_projector()  # --mmproj's, or the embedded one: images and audio in
        except BaseException:
            self.close()  # else the model's memory and the weights' FILE* outlive the failed start
            raise
        if config.embeddings:
            # Embeddings are switched on only while embed() runs, so generation keeps its logits.
            llama.llama_set_embeddings(self.context, False)
        # What one request may use: llama.cpp's per-sequence size (it pads it to 256). Beyond the training
        # context it is honoured, with llama.cpp's warning (runtime/engine/context_size.py says why).
        self.n_ctx = llama.llama_n_ctx_seq(self.context)
        if self.context_size.unified:  # llama.cpp's per-sequence size is then the whole cache
            self.n_ctx = min(self.n_ctx, self.context_size.per_sequence())
        if self.context_size.beyond_training():
            log.warning(messages.CONTEXT_BEYOND_TRAINING.format(n_ctx=self.n_ctx, n_ctx_train=self.n_ctx_train))
        self._batch = llama.llama_batch_init(config.n_batch, 0, 1)
        # Sequence ids 0..n_seq_max-1 serve generation; one more is kept for embeddings.
        self._embedding_seq = config.n_seq_max
        self.pool_cells = self.context_size.pool() if self.context_size.unified else self.n_ctx * config.n_seq_max
        self._scheduler = Scheduler(self, config.n_seq_max, config.n_batch, self.context_size.unified, config.cache_ram_mib,
                                    config.speculative, draft_model.open_draft(config, self.model, self.pool_cells))
        if config.rpc_servers and config.survive_lost_worker:
            rpc.on_lost_worker(lambda text: self._scheduler.fail(EngineUnavailable(text)))
        if config.warmup:
            # On the decoding thread, as every later decode: ggml's CPU backend gets an OpenMP thread team
            # per calling thread, and a second team left spinning beside the decoder's halved generation
            # speed on 2 cores (measured: Gemma 3 270M --cli 30 tok/s, 52 with --no-warmup).
            self._scheduler.run_exclusive(self._warm_up)

    # -- loading ---------------------------------------------------------------------------------

    def _load_model(self, source: ModelSource, config: EngineConfig, progress):
        params = self._model_params(config)
        self.offload = offload.plan_offload(config.n_gpu_layers, config.devices, config.split_mode, config.main_gpu,
                                            lambda: self._measure(source, config))
        params.n_gpu_layers = self.offload.layers
        params.split_mode, params.main_gpu = self.offload.split_mode, self.offload.main_gpu
        if progress is not None:
            def on_progress(fraction: float, _user: ctypes.c_void_p) -> bool:
                progress(fraction)
                return True

            self._progress_callback = llama.llama_progress_callback(on_progress)
            params.progress_callback = self._progress_callback
        with offload.abort_as_one_line(self.offload, self._offload_words):
            if source.offset:
                self._file = CFile(source.path, source.offset)
                model = llama.llama_model_load_from_file_ptr(ctypes.c_void_p(self._file.pointer), params)
            else:
                model = llama.llama_model_load_from_file(os.fsencode(source.path), params)
        if not model:
            if self._file:
                self._file.close()
            if self.offload.offloaded:  # the weights read before the GPU load: most likely its memory
                raise EngineFailure(messages.GPU_LOAD_FAILED.format(**self._offload_words()))
            raise ModelLoadFailed(source.path)
        return model

    def _model_params(self, config: EngineConfig):
        params = llama.llama_model_default_params()
        params.n_gpu_layers = 0
        params.use_extra_bufts = config.repack
        if config.devices is not None:
            self._device_arrays.append(devices.offload_list(config.devices))
            params.devices = ctypes.cast(self._device_arrays[-1], ctypes.c_void_p)
        if config.tensor_split:
            self._device_arrays.append(devices.tensor_split_array(config.tensor_split))
            params.tensor_split = self._device_arrays[-1]
        if config.use_mmap:
            params.load_mode = llama.LLAMA_LOAD_MODE_MMAP_MLOCK if config.use_mlock else llama.LLAMA_LOAD_MODE_MMAP
        else:
            params.load_mode = llama.LLAMA_LOAD_MODE_MLOCK if config.use_mlock else llama.LLAMA_LOAD_MODE_NONE
        return params

    def _measure(self, source: ModelSource, config: EngineConfig) -> offload.ModelSize | None:
        params = self._model_params(config)
        params.no_alloc, params.n_gpu_layers = True, -1
        params.load_mode = llama.LLAMA_LOAD_MODE_NONE  # as llama.cpp's fit: a no_alloc load maps nothing
        if not source.offset:
            return offload.measure(llama.llama_model_load_from_file(os.fsencode(source.path), params), config)
        probe_file = CFile(source.path, source.offset)
        try:
            return offload.measure(llama.llama_model_load_from_file_ptr(ctypes.c_void_p(probe_file.pointer), params), config)
        finally:
            probe_file.close()

    def _offload_words(self) -> dict[str, object]:
        size = self.offload.size
        return {"offloaded": self.offload.offloaded, "total": self.offload.total or "?",
                "devices": ", ".join(d.describe() for d in self.offload.used_devices()),
                "size": (size.weights if size else 0) / 2**30, "fewer": max(1, self.offload.offloaded // 2)}

    def _create_context(self, config: EngineConfig):
        params = llama.llama_context_default_params()
        # -c divided among the sequences (llama-server's rule, runtime/engine/context_size.py); the
        # embeddings' extra sequence gets a share of the same size.
        self.context_size = ContextSize.of(config, self.n_ctx_train)
        params.n_ctx = self.context_size.cache_cells(config.embeddings)
        params.n_batch = config.n_batch
        params.n_ubatch = min(config.n_batch, config.n_ubatch)
        params.n_seq_max = config.n_seq_max + (1 if config.embeddings else 0)
        arch = self.metadata.get("general.architecture", "")
        model_pooling = self.metadata.get(f"{arch}.pooling_type")
        if config.embeddings and (config.pooling or model_pooling) in ("mean", str(POOLING_TYPES["mean"])):
            # llama.cpp sizes mean pooling's worst case as n_ubatch split evenly among the sequences, and
            # aborts the process (GGML_ASSERT) when n_ubatch is not a multiple of their number.
            params.n_ubatch = max(params.n_seq_max, params.n_ubatch - params.n_ubatch % params.n_seq_max)
        self.n_ubatch = params.n_ubatch
        # One pool (-kvu, llama-server's default): any sequence may use all of -c while the others are
        # idle. Split (-no-kvu): a cache per sequence, so a request attends over exactly the cells it
        # would alone (one pool changes the order of the attention sums with the other requests' cells).
        params.kv_unified = self.context_size.unified
        params.n_threads = config.n_threads
        params.n_threads_batch = config.n_threads_batch or config.n_threads
        params.flash_attn_type = FLASH_ATTN_TYPES[config.flash_attn]
        params.type_k, params.type_v = KV_CACHE_TYPES[config.type_k], KV_CACHE_TYPES[config.type_v]
        params.embeddings = config.embeddings
        if config.pooling is not None:
            params.pooling_type = POOLING_TYPES[config.pooling]
        params.no_perf = True
        context = llama.llama_init_from_model(self.model, params)
        if not context and self.offload.offloaded:
            raise EngineFailure(messages.GPU_CONTEXT_FAILED.format(n_ctx=config.n_ctx, **self._offload_words()))
        if not context:
            if {config.type_k, config.type_v} & QUANTIZED_CACHE_TYPES:  # the likelier reason then
                raise EngineFailure(messages.CONTEXT_FAILED_CACHE_TYPES.format(type_k=config.type_k, type_v=config.type_v))
            raise EngineFailure(messages.CONTEXT_FAILED.format(n_ctx=config.n_ctx))
        return context

    def _warm_up(self) -> None:
        """llama.cpp's warm-up (common_init_from_params): an empty decode of BOS and EOS pages the
        weights in and sizes the compute buffers before the first request, not during it."""
        if llama.llama_pooling_type(self.context) != llama.LLAMA_POOLING_TYPE_NONE:
            return  # an embedding model: no generation to warm up for, and it wants no logits
        started = time.perf_counter()
        tokens = [t for t in (llama.llama_vocab_bos(self.vocab), llama.llama_vocab_eos(self.vocab)) if t >= 0] or [0]
        status = self.decode(tokens, range(len(tokens)), [0] * len(tokens), [False] * (len(tokens) - 1) + [True])
        llama.llama_memory_clear(llama.llama_get_memory(self.context), True)
        llama.llama_synchronize(self.context)
        log.debug("warm-up: %d tokens decoded in %.0f ms (status %d; --no-warmup skips it)",
                  len(tokens), (time.perf_counter() - started) * 1000, status)

    def _read_metadata(self) -> dict[str, str]:
        buf = ctypes.create_string_buffer(4096)
        result: dict[str, str] = {}
        for i in range(llama.llama_model_meta_count(self.model)):
            if llama.llama_model_meta_key_by_index(self.model, i, buf, len(buf)) < 0:
                continue
            key = buf.value.decode("utf-8", "replace")
            if llama.llama_model_meta_val_str_by_index(self.model, i, buf, len(buf)) >= 0:
                result[key] = buf.value.decode("utf-8", "replace")
        return result

    def _has_rank_head(self) -> bool:
        """A reranker's GGUF says so: its architecture's pooling_type is rank (convert_hf_to_gguf writes it)."""
        arch = self.metadata.get("general.architecture", "")
        return self.metadata.get(f"{arch}.pooling_type") == str(POOLING_TYPES["rank"])

    def close(self) -> None:
        if getattr(self, "_scheduler", None):
            self._scheduler.close()
            if self._scheduler.failed:
                # Freeing talks to the lost RPC worker and would wait for it forever; exit frees all.
                return
        if getattr(self, "context", None):
            llama.llama_batch_free(self._batch)
            llama.llama_free(self.context)
            self.context = None
        if getattr(self, "model", None):
            llama.llama_model_free(self.model)
            self.model = None
        if self._file:
            self._file.close()

    # -- model facts -----------------------------------------------------------------------------

    @property
    def chat_template(self) -> str | None:
        template = llama.llama_model_chat_template(self.model, None)
        return template.decode("utf-8", "replace") if template else None

    @property
    def model_name(self) -> str:
        return self.metadata.get("general.name") or self.metadata.get("general.basename") or "model"

    @property
    def n_vocab(self) -> int:
        return llama.llama_vocab_n_tokens(self.vocab)

    @property
    def n_embd(self) -> int:
        return llama.llama_model_n_embd(self.model)

    @functools.cached_property
    def fim_tokens(self) -> FimTokens:
        ids = [f(self.vocab) for f in (llama.llama_vocab_fim_pre, llama.llama_vocab_fim_suf, llama.llama_vocab_fim_mid,
                                       llama.llama_vocab_fim_rep, llama.llama_vocab_fim_sep)]
        return FimTokens(*(None if t == llama.LLAMA_TOKEN_NULL else t for t in ids))

    @property
    def pooling(self) -> str:
        """The context's pooling (--pooling, else the model's): a key of POOLING_TYPES."""
        kind = llama.llama_pooling_type(self.context)
        return next((name for name, value in POOLING_TYPES.items() if value == kind), "none")

    def special_tokens(self) -> dict[str, int | None]:
        """BOS, EOS and SEP ids (None where the vocabulary has none), for the reranker's input."""
        ids = {"bos": llama.llama_vocab_bos(self.vocab), "eos": llama.llama_vocab_eos(self.vocab),
               "sep": llama.llama_vocab_sep(self.vocab)}
        return {k: None if v == llama.LLAMA_TOKEN_NULL else v for k, v in ids.items()}

    @property
    def sequences_in_use(self) -> frozenset[int]:
        """Ids of the sequences generating now (for llama-server's /slots)."""
        return self._scheduler.sequences_in_use()

    def scheduler_stats(self) -> SchedulerStats:
        """The scheduler's snapshot for /metrics and /health: running, waiting, KV use, decodes."""
        return self._scheduler.stats()

    def token_text(self, token: int) -> str:
        return self._token_bytes(token, special=True).decode("utf-8", "replace")

    @property
    def bos_token(self) -> str:
        return self.token_text(llama.llama_vocab_bos(self.vocab))

    @property
    def eos_token(self) -> str:
        return self.token_text(llama.llama_vocab_eos(self.vocab))

    # -- generation ------------------------------------------------------------------------------

    def check_grammar(self, grammar: str) -> None:
        """Raises GrammarInvalid unless llama.cpp parses `grammar` (GBNF), so that a server can refuse
        a request before it starts. Reads only the vocabulary: safe beside the decoding thread."""
        if not grammar:
            return  # no grammar, as for _SamplerChain
        check_grammar_text(grammar)  # first: llama.cpp's parser trusts its input
        sampler = llama.llama_sampler_init_grammar(self.vocab, grammar.encode(), b"root")
        if not sampler:
            raise GrammarInvalid()
        llama.llama_sampler_free(sampler)

    def check_fits(self, n_prompt_tokens: int) -> None:
        """Raises ContextOverflow when a prompt leaves no room to generate even one token."""
        if n_prompt_tokens >= self.n_ctx:
            raise ContextOverflow(n_prompt_tokens, self.n_ctx, self.context_size)

    def _check_request(self, request: GenerationRequest) -> None:
        if not request.prompt_tokens:
            raise EngineFailure(messages.PROMPT_EMPTY)
        self.check_fits(len(request.prompt_tokens))

    def generate(self, request: GenerationRequest, cancel: threading.Event | None = None) -> Iterator[Piece]:
        """Streams the completion of `request`. Stops at an end-of-generation token, a stop string,
        `max_tokens`, a full context, or when `cancel` is set or the consumer stops reading
        (finish_reason "cancelled")."""
        self._check_request(request)
        yield from self._scheduler.submit(request, cancel)

    def start(self, request: GenerationRequest, cancel: threading.Event, deliver: Callable[[object], None]) -> None:
        """`generate` for event-driven consumers: every Piece (the last with its finish reason) or the
        exception that ends the request is passed to `deliver`, on the decoding thread, as it is made.
        Bad requests raise here, before anything is delivered."""
        self._check_request(request)
        self._scheduler.submit_to(request, cancel, deliver)

    @property
    def busy(self) -> int:
        """Requests generating or waiting for a sequence."""
        return self._scheduler.busy

    # -- primitives for the scheduler (called on its decoding thread only) -------------------------

    def decode(self, tokens: Sequence[int], positions: Sequence[int], seqs: Sequence[int],
               logits: Sequence[bool]) -> int:
        batch = self._batch
        batch.n_tokens = len(tokens)
        for i, token in enumerate(tokens):
            batch.token[i] = token
            batch.pos[i] = positions[i]
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seqs[i]
            batch.logits[i] = logits[i]
        return llama.llama_decode(self.context, batch)  # ctypes releases the GIL meanwhile

    def forget(self, seq: int, from_position: int) -> None:
        llama.llama_memory_seq_rm(llama.llama_get_memory(self.context), seq, from_position, -1)

    def save_state(self, seq: int) -> bytes:
        """A sequence's KV cells as bytes in host memory (llama_state_seq_get_data), for the prompt cache."""
        size = llama.llama_state_seq_get_size(self.context, seq)
        buffer = (ctypes.c_uint8 * size)()
        written = llama.llama_state_seq_get_data(self.context, buffer, size, seq)
        return bytes(memoryview(buffer)[:written])

    def load_state(self, seq: int, data: bytes) -> bool:
        """Puts saved cells back into `seq` (llama.cpp clears it first); False where the cache has no room."""
        buffer = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        return llama.llama_state_seq_set_data(self.context, buffer, len(data), seq) == len(data)

    def sampler(self, params: SamplingParams) -> "SamplerChain":
        return SamplerChain(self, params)

    def logprob(self, token: int, batch_index: int, top: int) -> TokenLogprob:
        """log-softmax of a batch position's logits, for `token` and the `top` most likely tokens."""
        return log_probabilities(self.context, self.n_vocab, batch_index, token, top)
