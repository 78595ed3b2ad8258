"""--cache-ram: a sequence reused for another conversation is saved to host memory first, and a later
request whose prompt starts with it gets its cells back instead of decoding them again, with more
conversations than sequences; bounded and least recently used out first; counted in /metrics."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from llmpack.runtime.engine.engine import Engine
from llmpack.runtime.engine.types import EngineConfig, GenerationRequest, ModelSource, SamplingParams
from support.server_fixtures import running_server
from support.tiny_model import write_tiny_gguf

GREEDY = SamplingParams(temperature=0.0, ignore_eos=True)
WORDS = ["cat ", "dog ", "the ", "yes ", "no ", "hello "]


@pytest.fixture(scope="module")
def long_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("models") / "long.gguf", n_ctx=4096)


def history(engine: Engine, conversation: int, n_tokens: int = 300) -> list[int]:
    return engine.tokenize(f"{conversation} " + WORDS[conversation % len(WORDS)] * n_tokens, True, True)[:n_tokens]


def turn(engine: Engine, tokens: list[int], n: int = 8) -> tuple[list[int], int]:
    """(the reply's tokens, the prompt tokens found cached)."""
    pieces = list(engine.generate(GenerationRequest(tuple(tokens), n, GREEDY)))
    return [t for p in pieces for t in p.token_ids], pieces[-1].timings.cached_tokens


def conversations(engine: Engine, count: int) -> tuple[list[list[int]], list[int]]:
    """Two turns each of `count` conversations, one after the other (each turn resends the history):
    the second turns' replies and how much of each second prompt was found cached."""
    prompts = [history(engine, c) for c in range(count)]
    for prompt in prompts:
        reply, _ = turn(engine, prompt)
        prompt += reply + engine.tokenize(" and then", False, False)
    seconds = [turn(engine, prompt) for prompt in prompts]
    return [reply for reply, _ in seconds], [cached for _, cached in seconds]


def engine_for(model: Path, cache_ram_mib: int, unified: bool = True) -> Engine:
    return Engine(ModelSource(str(model)), EngineConfig(n_ctx=4096, n_threads=2, n_seq_max=2, kv_unified=unified,
                                                        cache_ram_mib=cache_ram_mib))


def test_more_conversations_than_sequences_find_their_history(long_model: Path) -> None:
    engine = engine_for(long_model, 64)
    try:
        _, cached = conversations(engine, 6)
        assert all(n >= 300 for n in cached), cached  # every history came back, from a sequence or from RAM
        counts = engine.scheduler_stats()
        assert counts.prompt_cache.restored >= 4 and counts.prompt_cache.tokens_restored >= 4 * 300
        assert counts.prompt_cache_entries >= 2 and counts.prompt_cache_bytes > 0
    finally:
        engine.close()
    without = engine_for(long_model, 0)
    try:
        _, cached = conversations(without, 6)
        assert sum(n >= 300 for n in cached) <= 2, cached  # only the 2 sequences' last ones
    finally:
        without.close()


def test_restored_cells_continue_as_decoded_ones(long_model: Path) -> None:
    # Split caches (-no-kvu): every sequence computes over its own cells in the same order, so a
    # restored history gives the very replies a history decoded afresh gives.
    restoring, fresh = engine_for(long_model, 64, unified=False), engine_for(long_model, 0, unified=False)
    try:
        replies, cached = conversations(restoring, 5)
        assert all(n >= 300 for n in cached) and restoring.scheduler_stats().prompt_cache.restored >= 3
        assert replies == conversations(fresh, 5)[0]
    finally:
        restoring.close()
        fresh.close()


def test_the_cache_is_bounded_and_drops_the_least_recently_used(long_model: Path) -> None:
    engine = engine_for(long_model, 1)  # 1 MiB: two 900-token histories of this model (512 bytes a token)
    try:
        prompts = [history(engine, c, 900) for c in range(5)]
        for prompt in prompts:
            turn(engine, prompt)
        counts = engine.scheduler_stats()
        assert counts.prompt_cache_bytes <= 2**20 and counts.prompt_cache.evicted >= 1, counts
        assert counts.prompt_cache_entries == 2  # the sequences hold prompts 3 and 4, the cache 1 and 2
        assert turn(engine, prompts[2])[1] >= 899  # a recently saved one came back
        assert turn(engine, prompts[0])[1] < 10  # the oldest was dropped: decoded again
    finally:
        engine.close()


@pytest.mark.slow
def test_metrics_count_the_prompt_cache(tiny_bundle: Path, long_model: Path, tmp_path: Path) -> None:
    with running_server(tiny_bundle, "-m", str(long_model), "-c", "4096", "-np", "2", "--cache-ram", "16",
                        log_path=tmp_path / "server.log") as server:
        texts = [f"{c} " + WORDS[c] * 150 for c in range(4)]
        for _ in range(2):
            for text in texts:
                response = httpx.post(server.base_url + "/completions", timeout=60,
                                      json={"prompt": text, "max_tokens": 4, "temperature": 0})
                assert response.status_code == 200, response.text
        metrics = server.metrics()
        assert metrics["llmpack_prompt_cache_restored_total"] >= 2, metrics
        assert metrics["llmpack_prompt_cache_entries"] >= 1 and metrics["llmpack_kv_unified"] == 1
        assert metrics["llamacpp:prompt_tokens_cached_total"] >= 2 * 300
