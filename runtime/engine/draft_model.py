"""A draft model (llama-server's -md/--model-draft, speculative type draft-simple): a second, smaller model
with the same vocabulary proposes the next few tokens greedily, and the main model checks them all in one
decode through the path n-gram speculation uses (runtime/engine/speculative.py): a drafted token is kept
only where the request's own sampler picks it, so the output is the one plain decoding gives.

The draft model has its own context, with as many sequences as the main one; each of its sequences
follows the main sequence of the same id. Before drafting, what the main sequence committed since (a new
prompt, the tokens kept last step) is decoded into it, behind the common prefix of what it holds: a
sequence reused for another conversation, or restored from the prompt cache, catches up the same way.
All the sequences that draft in a step draft together, one draft-model decode per drafted position, as
llama.cpp's common_speculative_impl_draft_simple does; a drafted token is its most likely one (llama.cpp
samples the draft with top-k 10 and takes the first candidate), and drafting stops early where that
token's probability among the ten is below --spec-draft-p-min."""

from __future__ import annotations

import ctypes
import heapq
import logging
import math
import os
from dataclasses import dataclass
from typing import Sequence

from .. import messages
from ..errors import EngineFailure, ModelLoadFailed
from .native import CFile, gpu_offload_supported, llama
from .slots import common_prefix
from .types import DraftConfig, EngineConfig

log = logging.getLogger(__name__)

_VOCAB_MAX_SIZE_DIFFERENCE = 128  # llama.cpp's SPEC_VOCAB_MAX_SIZE_DIFFERENCE
_VOCAB_CHECK_START = 5  # SPEC_VOCAB_CHECK_START_TOKEN_ID
_TOP_K = 10  # the draft's candidates, for --spec-draft-p-min


@dataclass
class DraftWant:
    """One sequence's request for a draft: its committed tokens, the token sampled after them (not yet
    decoded by the main model), and the most tokens the step has room for."""

    seq: int
    tokens: Sequence[int]
    next_token: int
    limit: int


class DraftModel:
    """The draft model's weights and context, driven from the scheduler's decoding thread only."""

    def __init__(self, draft: DraftConfig, main: EngineConfig, cells: int, main_model) -> None:
        self.config = draft
        self._file: CFile | None = None
        self.model = self._load(draft, main)
        self.context = None
        try:
            self._check_vocabulary(main_model)
            self.context = self._create_context(draft, main, cells)
        except BaseException:
            self.close()
            raise
        self.vocab = llama.llama_model_get_vocab(self.model)
        self._n_vocab = llama.llama_vocab_n_tokens(self.vocab)
        self._n_batch = main.n_batch
        self._batch = llama.llama_batch_init(main.n_batch, 0, 1)
        self._greedy = llama.llama_sampler_init_greedy()
        from ..formats.llama_chat import logit_reads

        self._fast = logit_reads()  # the same pick and confidence without a copy of every logit
        self._held: list[list[int]] = [[] for _ in range(main.n_seq_max)]  # each sequence's tokens, in order

    def _load(self, draft: DraftConfig, main: EngineConfig):
        params = llama.llama_model_default_params()
        params.n_gpu_layers = draft.n_gpu_layers if draft.n_gpu_layers >= 0 else (999 if gpu_offload_supported() else 0)
        params.use_extra_bufts = main.repack
        params.load_mode = llama.LLAMA_LOAD_MODE_MMAP if main.use_mmap else llama.LLAMA_LOAD_MODE_NONE
        if draft.offset:  # carried in the executable (llmpack build --draft): read in place
            self._file = CFile(draft.path, draft.offset)
            model = llama.llama_model_load_from_file_ptr(ctypes.c_void_p(self._file.pointer), params)
        else:
            model = llama.llama_model_load_from_file(os.fsencode(draft.path), params)
        if not model:
            if self._file:
                self._file.close()
            raise ModelLoadFailed(draft.path)
        return model

    def _check_vocabulary(self, main_model) -> None:
        """llama.cpp's common_speculative_are_compatible: the same tokenizer type, BOS and EOS, sizes
        within 128, and the same text for every token both have (from id 5 on)."""
        main, own = llama.llama_model_get_vocab(main_model), llama.llama_model_get_vocab(self.model)
        n_main, n_own = llama.llama_vocab_n_tokens(main), llama.llama_vocab_n_tokens(own)
        same = (llama.llama_vocab_type(main) == llama.llama_vocab_type(own)
                and all(bool(f(main)) == bool(f(own)) for f in (llama.llama_vocab_get_add_bos, llama.llama_vocab_get_add_eos))
                and (not llama.llama_vocab_get_add_bos(main) or llama.llama_vocab_bos(main) == llama.llama_vocab_bos(own))
                and (not llama.llama_vocab_get_add_eos(main) or llama.llama_vocab_eos(main) == llama.llama_vocab_eos(own))
                and abs(n_main - n_own) <= _VOCAB_MAX_SIZE_DIFFERENCE
                and all(llama.llama_vocab_get_text(main, t) == llama.llama_vocab_get_text(own, t)
                        for t in range(_VOCAB_CHECK_START, min(n_main, n_own))))
        if not same:
            raise EngineFailure(messages.DRAFT_VOCAB_MISMATCH.format(path=self.config.path))

    def _create_context(self, draft: DraftConfig, main: EngineConfig, cells: int):
        params = llama.llama_context_default_params()
        # As many cells as the main cache, and room for each sequence's draft beyond what it commits.
        params.n_ctx = cells + main.n_seq_max * (draft.n_max + 1)
        params.n_batch = main.n_batch
        params.n_ubatch = min(main.n_batch, main.n_ubatch)
        params.n_seq_max = main.n_seq_max
        params.kv_unified = main.kv_unified and main.n_seq_max > 1
        params.n_threads = main.n_threads
        params.n_threads_batch = main.n_threads_batch or main.n_threads
        params.no_perf = True
        context = llama.llama_init_from_model(self.model, params)
        if not context:
            raise EngineFailure(messages.CONTEXT_FAILED.format(n_ctx=params.n_ctx))
        return context

    def close(self) -> None:
        if getattr(self, "_greedy", None):
            llama.llama_sampler_free(self._greedy)
            self._greedy = None
            llama.llama_batch_free(self._batch)
        if self.context:
            llama.llama_free(self.context)
            self.context = None
        if self.model:
            llama.llama_model_free(self.model)
            self.model = None
        if self._file:
            self._file.close()
            self._file = None

    # -- drafting (the scheduler's decoding thread) ------------------------------------------------

    def draft(self, wants: Sequence[DraftWant]) -> list[list[int]]:
        """The drafts for `wants`, in their order (empty where the model was not confident enough, or
        its cache had no room)."""
        drafts: list[list[int]] = [[] for _ in wants]
        limits = [min(want.limit, self.config.n_max) for want in wants]
        live = [i for i, want in enumerate(wants) if limits[i] > 0]
        if not live or not self._catch_up([wants[i] for i in live]):
            return drafts
        # Each live sequence's last token (the main model's next one) is decoded with its logits.
        step = [(i, wants[i].next_token) for i in live]
        while step:
            if not self._decode([(wants[i].seq, token) for i, token in step], all_logits=True):
                self._clear(wants[i].seq for i, _ in step)  # caught up again next time
                break
            following = []
            for index, (i, token) in enumerate(step):
                self._held[wants[i].seq].append(token)
                proposal = self._propose(index)
                if proposal is None:
                    continue
                drafts[i].append(proposal)
                if len(drafts[i]) < limits[i]:
                    following.append((i, proposal))
            step = following
        return [d if len(d) >= self.config.n_min else [] for d in drafts]

    def _catch_up(self, wants: Sequence[DraftWant]) -> bool:
        """Brings each sequence to its committed tokens (the next token excluded), behind the common
        prefix of what it holds; False where the cache had no room even after idle sequences were cleared."""
        pending: list[tuple[int, int]] = []  # (seq, token), in position order per sequence
        for want in wants:
            held = self._held[want.seq]
            keep = common_prefix(held, want.tokens)
            if keep < len(held):
                llama.llama_memory_seq_rm(llama.llama_get_memory(self.context), want.seq, keep, -1)
                del held[keep:]
            pending += [(want.seq, token) for token in want.tokens[keep:]]
        for start in range(0, len(pending), self._n_batch):
            chunk = pending[start:start + self._n_batch]
            if not self._decode(chunk, all_logits=False):
                busy = {want.seq for want in wants}
                self._clear(seq for seq in range(len(self._held)) if seq not in busy)  # idle ones give way
                if not self._decode(chunk, all_logits=False):
                    self._clear(busy)
                    return False
            for seq, token in chunk:
                self._held[seq].append(token)
        return True

    def _decode(self, entries: Sequence[tuple[int, int]], all_logits: bool) -> bool:
        batch = self._batch
        batch.n_tokens = len(entries)
        positions: dict[int, int] = {}
        for i, (seq, token) in enumerate(entries):
            position = positions.get(seq, len(self._held[seq]))
            positions[seq] = position + 1
            batch.token[i] = token
            batch.pos[i] = position
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = all_logits
        status = llama.llama_decode(self.context, batch)
        if status != 0:
            log.debug("draft model: llama_decode returned %d for %d tokens", status, len(entries))
        return status == 0

    def _propose(self, batch_index: int) -> int | None:
        """The draft's most likely token at a batch position, or None where it ends the draft."""
        token = self._fast.greedy_token(self.context, batch_index) if self._fast else -1
        if token < 0:
            token = llama.llama_sampler_sample(self._greedy, self.context, batch_index)
        if llama.llama_vocab_is_eog(self.vocab, token):
            return None  # nothing follows an end: the draft stops before it (and --ignore-eos bans it)
        if self.config.p_min <= 0:
            return token
        return token if self._top_share(batch_index) >= self.config.p_min else None

    def _top_share(self, batch_index: int) -> float:
        """The proposed token's probability among the top 10 (llama.cpp's draft: top-k 10, then the
        probabilities among them)."""
        share = self._fast.top_share(self.context, batch_index, _TOP_K) if self._fast else -1.0
        if share >= 0:
            return share
        logits = llama.llama_get_logits_ith(self.context, batch_index)[:self._n_vocab]
        top = heapq.nlargest(_TOP_K, logits)
        return 1 / math.fsum(math.exp(x - top[0]) for x in top)

    def _clear(self, seqs) -> None:
        for seq in seqs:
            llama.llama_memory_seq_rm(llama.llama_get_memory(self.context), seq, 0, -1)
            self._held[seq].clear()


def open_draft(config: EngineConfig, main_model, cells: int) -> DraftModel | None:
    """The draft model of --model-draft (or the executable's), or None without one."""
    return DraftModel(config.draft, config, cells, main_model) if config.draft is not None else None
