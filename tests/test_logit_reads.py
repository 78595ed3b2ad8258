"""Reads of the logits that llama.cpp's sampler chain makes slow (libllmpack-chat's
build/chat-shim/llmpack_sample.cpp): greedy decoding's pick, where the chain holds the greedy sampler
alone; sampled decoding's top-k candidates, handed to the request's own chain to pick among; the draft
model's confidence (the top token's share among the top 10). llama_sampler_sample copies every logit
first (about 0.5 ms a token on a 262k vocabulary). Each must give what llama.cpp gives."""

from __future__ import annotations

import ctypes
import heapq
import math
import random

import pytest
from llmpack.runtime.engine import logprobs as logprobs_module
from llmpack.runtime.engine.engine import Engine
from llmpack.runtime.engine.types import EngineConfig, GenerationRequest, ModelSource, SamplingParams
from llmpack.runtime.formats import llama_chat
from support.tiny_model import write_tiny_gguf


def llama_greedy(values: list[float]) -> int:
    """llama_sampler_greedy_apply (src/llama-sampler.cpp), as written there."""
    selected = 0
    for i in range(1, len(values)):
        if values[i] > values[selected]:
            selected = i
    return selected


def logit_lists() -> list[list[float]]:
    rng = random.Random(5)
    lists = [[1.0], [2.0, 2.0], [-math.inf, -math.inf, -math.inf], [math.nan, 5.0, 3.0], [1.0, math.nan, 3.0, 3.0]]
    for n in (255, 256, 257, 1000, 4099, 70_000):
        values = [rng.uniform(-20, 20) for _ in range(n)]
        lists.append(values)
        tied = [round(v) for v in values]  # many ties, the largest among them too
        lists.append([float(v) for v in tied])
        holes = list(values)
        for i in rng.sample(range(n), n // 10):
            holes[i] = rng.choice([math.nan, -math.inf, math.inf])
        lists.append(holes)
        rising = sorted(values)  # every block beats the last
        lists.append(rising)
    return [[ctypes.c_float(v).value for v in values] for values in lists]  # as the library reads them


def test_the_pick_is_llama_cpps_first_largest_with_nans_never_winning() -> None:
    for values in logit_lists():
        assert llama_chat.first_argmax(values) == llama_greedy(values), len(values)


def test_the_top_candidates_are_the_k_largest_in_descending_order_lower_token_first() -> None:
    for values in logit_lists():
        for k in (1, 40, 128):
            ranked = sorted((i for i, v in enumerate(values) if not math.isnan(v) and v > -math.inf),
                            key=lambda i: (-values[i], i))
            expected = ranked[:k] if len(ranked) >= k else None
            assert llama_chat.top_candidates(values, k) == expected, (len(values), k)


def test_the_top_share_is_the_top_tokens_probability_among_the_k_largest() -> None:
    for values in logit_lists():
        finite = [v for v in values if not math.isnan(v)]
        for k in (1, 10, 40):
            top = heapq.nlargest(k, finite)
            expected = 0.0 if top[0] == -math.inf else 1 / math.fsum(
                math.exp(v - top[0]) if v != -math.inf else 0.0 for v in top)
            if top[0] == math.inf:
                continue  # inf - inf: no share to compare (llama.cpp's softmax gives NaN there too)
            assert llama_chat.top_share(values, k) == pytest.approx(expected, rel=1e-5), (len(values), k)


def test_the_log_total_is_the_softmax_denominators_log() -> None:
    for values in logit_lists():
        finite = [v for v in values if not math.isnan(v)]
        peak = max(finite)
        if peak in (math.inf, -math.inf):
            continue
        expected = peak + math.log(math.fsum(math.exp(v - peak) for v in finite))
        if len(finite) == len(values):
            assert llama_chat.log_total(values) == pytest.approx(expected, abs=1e-5), len(values)
        else:  # a NaN logit makes the whole softmax NaN, as in Python's
            assert math.isnan(llama_chat.log_total(values))


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory):
    model = write_tiny_gguf(tmp_path_factory.mktemp("models") / "greedy.gguf", n_ctx=1024)
    engine = Engine(ModelSource(str(model)), EngineConfig(n_ctx=1024, n_threads=2, n_seq_max=2))
    yield engine
    engine.close()


def generate(engine: Engine, sampling: SamplingParams, logprobs: int | None = None) -> list[list]:
    def run(text: str) -> list:
        request = GenerationRequest(tuple(engine.tokenize(text, True, True)), 48, sampling, logprobs=logprobs)
        pieces = list(engine.generate(request))
        if logprobs is not None:
            return [p for piece in pieces for p in piece.logprobs]
        return [t for piece in pieces for t in piece.token_ids]

    return [run(text) for text in ("the cat sat on the", "hello world hello", "a b c d a b c", "yes no yes no")]


def counted_reads(calls: list[str]):
    """logit_reads() whose functions note each call by name."""
    reads = llama_chat.logit_reads()
    assert reads is not None  # the set-up builds the library with them

    def counted(name: str, function):
        return lambda *args: calls.append(name) or function(*args)

    return lambda: llama_chat.LogitReads(*(counted(name, getattr(reads, name)) for name in reads._fields))


def through_the_library_and_the_chain(engine: Engine, monkeypatch, sampling: SamplingParams,
                                      read: str) -> tuple[list[list[int]], int]:
    """The tokens generated with the library's reads, checked equal to those of llama.cpp's chain alone
    (the same seed), and how many times `read` was called."""
    calls: list[str] = []
    monkeypatch.setattr(llama_chat, "logit_reads", counted_reads(calls))
    fast = generate(engine, sampling)
    monkeypatch.setattr(llama_chat, "logit_reads", lambda: None)
    assert generate(engine, sampling) == fast
    return fast, calls.count(read)


def test_greedy_decoding_reads_the_logits_and_picks_what_the_chain_picks(engine: Engine, monkeypatch) -> None:
    fast, picks = through_the_library_and_the_chain(engine, monkeypatch, SamplingParams(temperature=0.0), "greedy_token")
    ended = sum(len(tokens) < 48 for tokens in fast)  # those picked an end token too
    assert picks == sum(map(len, fast)) + ended and picks > 100


@pytest.mark.parametrize("sampling", [SamplingParams(temperature=0.0, ignore_eos=True),
                                      SamplingParams(temperature=0.0, logit_bias=((9, 30.0), (9, -5.0), (12, -math.inf),
                                                                                  (10**6, 1.0)))],
                         ids=["ignore_eos", "logit_bias"])
def test_greedy_decoding_after_a_logit_bias_picks_what_the_chain_picks(engine: Engine, monkeypatch,
                                                                      sampling: SamplingParams) -> None:
    fast, picks = through_the_library_and_the_chain(engine, monkeypatch, sampling, "greedy_token_biased")
    assert picks >= sum(map(len, fast)) > 100
    if sampling.logit_bias:  # the bias was felt: 9 (+25) came out, 12 (banned) never
        assert any(9 in tokens for tokens in fast) and not any(12 in tokens for tokens in fast)


@pytest.mark.parametrize("sampling", [SamplingParams(temperature=0.8, seed=11),
                                      SamplingParams(temperature=1.5, top_k=128, top_p=1.0, min_p=0.0, seed=12),
                                      SamplingParams(temperature=1.0, top_k=1, seed=13)], ids=["default", "k128", "k1"])
def test_sampling_picks_among_the_top_k_the_library_reads_as_the_chain_would(engine: Engine, monkeypatch,
                                                                            sampling: SamplingParams) -> None:
    fast, picks = through_the_library_and_the_chain(engine, monkeypatch, sampling, "sample_top_k")
    assert picks >= sum(map(len, fast)) > 100


def test_a_chain_that_looks_at_every_logit_first_keeps_llama_cpps_sampling(engine: Engine, monkeypatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(llama_chat, "logit_reads", counted_reads(calls))
    for sampling in (SamplingParams(temperature=0.0, repeat_penalty=1.3), SamplingParams(seed=1, ignore_eos=True),
                     SamplingParams(temperature=0.0, ignore_eos=True, repeat_penalty=1.2),
                     SamplingParams(seed=1, logit_bias=((5, 2.0),)), SamplingParams(seed=1, repeat_penalty=1.1),
                     SamplingParams(seed=1, top_k=0), SamplingParams(seed=1, top_k=129),
                     SamplingParams(seed=1, grammar='root ::= ("the" | " cat")+')):
        assert any(generate(engine, sampling))
    assert calls == []


@pytest.mark.parametrize("top", [0, 5, 20])
def test_log_probabilities_are_read_by_the_library_as_python_computes_them(engine: Engine, monkeypatch,
                                                                          top: int) -> None:
    calls: list[str] = []
    monkeypatch.setattr(logprobs_module, "logit_reads", counted_reads(calls))
    fast = generate(engine, SamplingParams(temperature=0.0), logprobs=top)
    assert calls.count("logprobs") == sum(map(len, fast)) > 100
    monkeypatch.setattr(logprobs_module, "logit_reads", lambda: None)
    slow = generate(engine, SamplingParams(temperature=0.0), logprobs=top)
    assert [p.token_id for p in sum(fast, [])] == [p.token_id for p in sum(slow, [])]
    for ours, python in zip(sum(fast, []), sum(slow, [])):
        assert ours.logprob == pytest.approx(python.logprob, abs=1e-5)
        assert len(ours.top) == top and [t for t, _ in ours.top] == [t for t, _ in python.top]
        assert [v for _, v in ours.top] == pytest.approx([v for _, v in python.top], abs=1e-5)
