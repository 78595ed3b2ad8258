"""One request's llama.cpp sampler chain, made from its SamplingParams."""

from __future__ import annotations

import ctypes
import math
import os
from typing import TYPE_CHECKING

from ..errors import GrammarInvalid
from ..grammar.check import GrammarRefused, check_grammar
from .native import llama
from .types import SamplingParams

if TYPE_CHECKING:
    from .engine import Engine


def check_grammar_text(grammar: str) -> None:
    try:
        check_grammar(grammar)
    except GrammarRefused as exc:
        raise GrammarInvalid(exc.reason) from None


def _grammar_sampler(engine: Engine, params: SamplingParams):
    if not params.grammar_triggers:
        grammar = llama.llama_sampler_init_grammar(engine.vocab, params.grammar.encode(), b"root")
        if grammar and params.grammar_prefill:
            _prefill(engine, grammar, params.grammar_prefill)
        return grammar
    patterns = (ctypes.c_char_p * len(params.grammar_triggers))(*(p.encode() for p in params.grammar_triggers))
    return llama.llama_sampler_init_grammar_lazy_patterns(engine.vocab, params.grammar.encode(), b"root",
                                                          patterns, len(params.grammar_triggers), None, 0)


def _prefill(engine: Engine, grammar, text: str) -> None:
    """The generation prompt's tokens, accepted by the grammar before any is sampled (llama.cpp's
    common_sampler_init: a leading space piece some tokenizers add is skipped)."""
    tokens = engine.tokenize(text, add_special=False, parse_special=True)
    if tokens and not text[:1].isspace() and engine.detokenize(tokens[:1], special=True)[:1].isspace():
        tokens = tokens[1:]
    for token in tokens:
        llama.llama_sampler_accept(grammar, token)


# The most top-k candidates the library hands the chain (llmpack_sample_top_k); above it, llama.cpp's
# top-k sampler over the whole vocabulary.
_MOST_CANDIDATES = 128


class SamplerChain:
    """One request's llama.cpp sampler chain (penalties, grammar, top-k/p, min-p, temperature)."""

    def __init__(self, engine: Engine, params: SamplingParams) -> None:
        self._engine = engine
        self._fast_pick = None  # batch index -> token (-1: not done), reading the logits without a copy
        self._chain = llama.llama_sampler_chain_init(llama.llama_sampler_chain_default_params())
        add = lambda sampler: llama.llama_sampler_chain_add(self._chain, sampler)  # noqa: E731
        if params.reasoning_budget:  # first, as in llama.cpp's common sampler: it may force the thought's end
            from ..formats.llama_chat import reasoning_budget_sampler

            budget = reasoning_budget_sampler(engine.vocab, params.reasoning_budget)
            if budget:
                add(ctypes.cast(budget, llama.llama_sampler_p_ctypes))
        bias = list(params.logit_bias)
        if params.ignore_eos:  # as llama.cpp's --ignore-eos: a logit bias of -inf on every EOG token
            bias += [(t, -math.inf) for t in engine.end_of_generation_tokens]
        if bias:  # first in the chain, as in llama.cpp's common sampler
            biases = (llama.llama_logit_bias * len(bias))(*(llama.llama_logit_bias(t, b) for t, b in bias))
            add(llama.llama_sampler_init_logit_bias(engine.n_vocab, len(bias), biases))
        if params.grammar:
            try:
                check_grammar_text(params.grammar)
            except GrammarInvalid:
                self.free()
                raise
            grammar = _grammar_sampler(engine, params)
            if not grammar:
                self.free()
                raise GrammarInvalid()
            add(grammar)
        if params.repeat_penalty != 1.0 or params.presence_penalty or params.frequency_penalty:
            last_n = engine.n_ctx if params.repeat_last_n < 0 else params.repeat_last_n
            # This llama.cpp's signature still takes the vocabulary size first (see its llama.h).
            add(llama.llama_sampler_init_penalties(engine.n_vocab, last_n, params.repeat_penalty,
                                                   params.frequency_penalty, params.presence_penalty))
        from ..formats.llama_chat import logit_reads

        # Nothing in the chain yet looks at every logit (or, for greedy decoding, only a logit bias): the
        # library can read them without the copy.
        so_far = llama.llama_sampler_chain_n(self._chain)
        bias_alone = bool(bias) and so_far == 1
        reads = logit_reads() if so_far == 0 or (bias_alone and params.temperature <= 0) else None
        context = engine.context
        if params.temperature <= 0:
            if reads and bias_alone:  # the same pick; neither sampler keeps a state to accept
                tokens = (ctypes.c_int32 * len(bias))(*(t for t, _ in bias))
                values = (ctypes.c_float * len(bias))(*(b for _, b in bias))
                self._fast_pick = lambda index: reads.greedy_token_biased(context, index, tokens, values, len(bias))
            elif reads:
                self._fast_pick = lambda index: reads.greedy_token(context, index)
            add(llama.llama_sampler_init_greedy())
            return
        if params.top_k > 0:
            add(llama.llama_sampler_init_top_k(params.top_k))
            if reads and params.top_k <= _MOST_CANDIDATES:  # the chain picks among the k the library finds
                chain, k = self._chain, params.top_k
                self._fast_pick = lambda index: reads.sample_top_k(chain, context, index, k)
        add(llama.llama_sampler_init_top_p(params.top_p, 1))
        add(llama.llama_sampler_init_min_p(params.min_p, 1))
        add(llama.llama_sampler_init_temp(params.temperature))
        seed = params.seed if params.seed >= 0 else int.from_bytes(os.urandom(4), "little")
        add(llama.llama_sampler_init_dist(seed & 0xFFFFFFFF))

    def sample(self, batch_index: int) -> int:
        if self._fast_pick is not None:
            token = self._fast_pick(batch_index)
            if token >= 0:
                return token
        # llama_sampler_sample also accepts the token into the chain (penalties, grammar state).
        return llama.llama_sampler_sample(self._chain, self._engine.context, batch_index)

    def free(self) -> None:
        self._fast_pick = None  # it holds the chain
        if self._chain:
            llama.llama_sampler_free(self._chain)
            self._chain = None
