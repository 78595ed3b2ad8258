"""The engine's continuous batching, on real llama.cpp with the tiny model: requests decoded together
give what they give alone, leave and join at token boundaries, and reuse cached prompt prefixes."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from llmpack.runtime.engine.engine import Engine
from llmpack.runtime.engine.types import (
    EngineConfig,
    GenerationRequest,
    ModelSource,
    SamplingParams,
)

PROMPTS = ["the cat", "hello world", "four score", "the dog and the cat", "yes no yes", "model user",
           "a b c d", "in the years ago"]


@pytest.fixture(scope="module")
def engine(tiny_gguf: Path):
    engine = Engine(ModelSource(str(tiny_gguf)), EngineConfig(n_ctx=4096, n_threads=2, n_seq_max=8))
    yield engine
    engine.close()


def request(engine: Engine, prompt: str, max_tokens: int = 24, **sampling) -> GenerationRequest:
    return GenerationRequest(tuple(engine.tokenize(prompt, True, True)), max_tokens,
                             SamplingParams(**{"temperature": 0.0, **sampling}))


def complete(engine: Engine, req: GenerationRequest, cancel: threading.Event | None = None):
    pieces = list(engine.generate(req, cancel))
    return "".join(p.text for p in pieces), pieces[-1]


def concurrently(jobs):
    results = [None] * len(jobs)
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, jobs[i]())) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results


def test_greedy_output_is_the_same_alone_or_in_a_batch_of_8(engine: Engine) -> None:
    alone = [complete(engine, request(engine, p))[0] for p in PROMPTS]
    for _ in range(3):  # different interleavings each time
        together = concurrently([lambda p=p: complete(engine, request(engine, p))[0] for p in PROMPTS])
        assert together == alone


def test_seeded_sampling_is_the_same_alone_or_batched(engine: Engine) -> None:
    seeded = [request(engine, p, temperature=1.0, seed=7 + i) for i, p in enumerate(PROMPTS)]
    alone = [complete(engine, r)[0] for r in seeded]
    assert concurrently([lambda r=r: complete(engine, r)[0] for r in seeded]) == alone


def test_each_request_keeps_its_own_limits(engine: Engine) -> None:
    limits = [1, 3, 8, 24]
    results = concurrently([lambda n=n: complete(engine, request(engine, "the cat", max_tokens=n)) for n in limits])
    for n, (_, last) in zip(limits, results):
        assert last.timings.generated_tokens <= n
        assert last.finish_reason == "length" or last.timings.generated_tokens < n


def test_cancelling_one_request_leaves_the_others_whole(engine: Engine) -> None:
    alone = complete(engine, request(engine, "hello world", max_tokens=64))[0]
    cancel = threading.Event()

    def cancelled_one():
        pieces = []
        for piece in engine.generate(request(engine, "the dog and the cat", max_tokens=400), cancel):
            pieces.append(piece)
            if len(pieces) == 3:
                cancel.set()
        return pieces[-1]

    last, (text, _) = concurrently([cancelled_one, lambda: complete(engine, request(engine, "hello world", max_tokens=64))])
    assert last.finish_reason == "cancelled" and last.timings.generated_tokens < 400
    assert text == alone


def test_a_consumer_that_stops_reading_stops_its_generation(engine: Engine) -> None:
    stream = engine.generate(request(engine, "the cat", max_tokens=400))
    next(stream)
    stream.close()
    # The sequence is released: a full batch of new requests still runs.
    results = concurrently([lambda p=p: complete(engine, request(engine, p, max_tokens=4)) for p in PROMPTS])
    assert all(last.finish_reason in ("length", "stop") for _, last in results)
    assert engine.busy == 0


def test_a_second_turn_reuses_the_cached_history(engine: Engine) -> None:
    # The tiny vocabulary spells text as "▁" and single letters, and no earlier prompt starts with
    # "z": at most the BOS and the "▁" are shared, so the first turn is evaluated in full and the
    # second's reuse is the first's doing.
    history = "zzz the cat and the dog " * 10
    first_text, first = complete(engine, request(engine, history, max_tokens=8))
    assert engine.tokenize(history, True, True)[1:3] == engine.tokenize("zz", False, False)[:2]
    assert first.timings.cached_tokens <= 2
    _, second = complete(engine, request(engine, history + first_text + " yes", max_tokens=8))
    assert second.timings.cached_tokens >= first.timings.prompt_tokens - 1


def test_stop_strings_per_request(engine: Engine) -> None:
    text, _ = complete(engine, request(engine, "the cat", max_tokens=40))
    stop = text[5:8]
    assert stop.strip(), text
    stopped_text, last = complete(engine, GenerationRequest(tuple(engine.tokenize("the cat", True, True)), 40,
                                                            SamplingParams(temperature=0.0), (stop,)))
    assert last.finish_reason == "stop"
    assert stopped_text == text[:text.index(stop)]
