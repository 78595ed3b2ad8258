"""The scheduler's failure handling, with a scripted backend (the real engine is in test_batching.py):
whatever goes wrong inside the decoding thread fails the requests at hand, never later ones."""

from __future__ import annotations

import time

import pytest
from llmpack.runtime.engine.scheduler import Scheduler
from llmpack.runtime.engine.types import GenerationRequest, SamplingParams, TokenLogprob
from llmpack.runtime.errors import EngineFailure


class ScriptedSampler:
    def __init__(self, tokens: list[int]) -> None:
        self.tokens = tokens

    def sample(self, batch_index: int) -> int:
        return self.tokens.pop(0)

    def free(self) -> None:
        pass


class ScriptedBackend:
    """Token 0 ends generation; token t stands for the text chr(96 + t)."""

    n_ctx = 64

    def __init__(self) -> None:
        self.fail_sampler = False
        self.fail_decode: Exception | None = None
        self.forgotten: list[tuple[int, int]] = []

    def decode(self, tokens, positions, seqs, logits) -> int:
        if self.fail_decode is not None:
            error, self.fail_decode = self.fail_decode, None
            raise error
        return 0

    def forget(self, seq: int, from_position: int) -> None:
        self.forgotten.append((seq, from_position))

    def sampler(self, params: SamplingParams) -> ScriptedSampler:
        if self.fail_sampler:
            self.fail_sampler = False
            raise RuntimeError("sampler exploded")
        return ScriptedSampler([1, 2, 3, 0])

    def token_bytes(self, token: int) -> bytes:
        return chr(96 + token).encode()

    def is_end_of_generation(self, token: int) -> bool:
        return token == 0

    def logprob(self, token: int, batch_index: int, top: int) -> TokenLogprob:
        return TokenLogprob(token, 0.0)


@pytest.fixture
def backend_and_scheduler():
    backend = ScriptedBackend()
    scheduler = Scheduler(backend, n_seq=2, n_batch=16)
    yield backend, scheduler
    scheduler.close()


def text_of(scheduler: Scheduler) -> str:
    return "".join(p.text for p in scheduler.submit(GenerationRequest((5, 6, 7), 10, SamplingParams())))


def test_a_normal_request(backend_and_scheduler) -> None:
    _, scheduler = backend_and_scheduler
    assert text_of(scheduler) == "abc"


def test_a_broken_sampler_fails_only_its_request(backend_and_scheduler) -> None:
    backend, scheduler = backend_and_scheduler
    backend.fail_sampler = True
    with pytest.raises(EngineFailure, match="internal error in the engine: RuntimeError: sampler exploded"):
        text_of(scheduler)
    assert text_of(scheduler) == "abc"


def test_a_crash_while_decoding_fails_the_running_requests_and_serving_goes_on(backend_and_scheduler) -> None:
    backend, scheduler = backend_and_scheduler
    backend.fail_decode = ValueError("bad batch")
    with pytest.raises(EngineFailure, match="ValueError: bad batch"):
        text_of(scheduler)
    assert text_of(scheduler) == "abc"
    assert scheduler.busy == 0


def test_a_batch_lists_its_sequences_in_id_order(backend_and_scheduler) -> None:
    """llama.cpp computes a batch over per-sequence caches in runs of consecutive sequence ids, one
    graph per run: a batch of sequences 1, 0 costs two computes where 0, 1 costs one."""
    backend, scheduler = backend_and_scheduler
    assert text_of(scheduler) == "abc"  # sequence 0 now caches (5, 6, 7); the free list is [1, 0]
    batches: list[list[int]] = []
    decode = backend.decode

    def recording(tokens, positions, seqs, logits) -> int:
        batches.append(list(seqs))
        time.sleep(0.02)  # both requests are admitted before the first one ends
        return decode(tokens, positions, seqs, logits)

    backend.decode = recording
    uncached = scheduler.submit(GenerationRequest((9, 9, 9), 10, SamplingParams()))  # admitted first: sequence 1
    cached = scheduler.submit(GenerationRequest((5, 6, 7), 10, SamplingParams()))  # its prefix: sequence 0
    assert "".join(p.text for p in uncached) == "abc" and "".join(p.text for p in cached) == "abc"
    together = [seqs for seqs in batches if len(set(seqs)) > 1]
    assert together and all(seqs == sorted(seqs) for seqs in together), batches
