"""One KV pool shared by the -np sequences (llama.cpp's unified KV cache, llama-server's --kv-unified): any
one request may use the whole of -c while the others are idle, concurrent requests still decode in one
batch, and when the pool itself is full, API requests give way to the terminal chat's (runtime/engine/pool.py)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
from llmpack.runtime.engine.context_size import ContextSize, describe_context
from llmpack.runtime.engine.engine import Engine
from llmpack.runtime.engine.types import EngineConfig, GenerationRequest, ModelSource, SamplingParams
from support.server_fixtures import running_server
from support.templates import QWEN25
from support.tiny_model import write_tiny_gguf

GREEDY_ENDLESS = SamplingParams(temperature=0.0, ignore_eos=True)


def test_one_pool_gives_any_sequence_all_of_c_and_caps_where_asked() -> None:
    pool = ContextSize(2048, 4, 8192, unified=True)
    assert (pool.pool(), pool.per_sequence(), pool.cache_cells(False)) == (2048, 2048, 2048)
    assert describe_context(2048, pool) == "2048 tokens (-c 2048: one pool shared by -np 4)"
    assert pool.sharing() == "unified" and ContextSize(2048, 4, 8192).sharing() == "split"
    capped = ContextSize(8192, 4, 1024, given=False, unified=True)  # the default -c: each request at most n_ctx_train
    assert (capped.pool(), capped.per_sequence()) == (8192, 1024)
    assert capped.origin() == "-c 8192 (the default): one pool shared by -np 4, capped at the model's training context of 1024"
    per_slot = ContextSize(8192, 4, 8192, given=False, unified=True, per_slot=1000)  # llama-server: pool = -np x N
    assert (per_slot.pool(), per_slot.per_sequence()) == (4000, 1000)
    assert ContextSize(8192, 4, 8192, unified=True, per_slot=1000).pool() == 8192  # a -c typed wins
    assert ContextSize(0, 2, 1024, unified=True).pool() == 2048  # -c 0: each may hold its training context
    assert ContextSize(0, 2, 1024, unified=True).per_sequence() == 1024


@pytest.fixture(scope="module")
def pool_engine(tmp_path_factory: pytest.TempPathFactory):
    model = write_tiny_gguf(tmp_path_factory.mktemp("models") / "pool.gguf", n_ctx=4096)
    engine = Engine(ModelSource(str(model)), EngineConfig(n_ctx=1024, n_threads=2, n_seq_max=4, kv_unified=True))
    yield engine
    engine.close()


def prompt(engine: Engine, n_tokens: int, word: str = "the cat ") -> tuple[int, ...]:
    tokens = engine.tokenize(word * n_tokens, True, True)[:n_tokens]
    assert len(tokens) == n_tokens
    return tuple(tokens)


def run(engine: Engine, request: GenerationRequest, started: threading.Event | None = None) -> tuple[int, str]:
    generated, reason = 0, ""
    for piece in engine.generate(request):
        generated += len(piece.token_ids)
        if started is not None and piece.token_ids:
            started.set()
        reason = piece.finish_reason or reason
    return generated, reason


def test_one_sequence_uses_more_than_its_share(pool_engine: Engine) -> None:
    assert pool_engine.n_ctx == 1024 and pool_engine.scheduler_stats().kv_unified
    # 700 + 200 tokens in one sequence: far over -c/-np (256), which the split cache capped it at.
    assert run(pool_engine, GenerationRequest(prompt(pool_engine, 700), 200, GREEDY_ENDLESS)) == (200, "length")


def test_concurrent_sequences_still_batch(pool_engine: Engine) -> None:
    before = pool_engine.scheduler_stats().n_decode
    results: list[tuple[int, str]] = []
    threads = [threading.Thread(target=lambda w=w: results.append(run(
        pool_engine, GenerationRequest(prompt(pool_engine, 40, w), 64, GREEDY_ENDLESS)))) for w in ("a ", "b ", "c ", "d ")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [(64, "length")] * 4
    decodes = pool_engine.scheduler_stats().n_decode - before
    assert decodes < 2 * 64 + 8, decodes  # 4 x 64 tokens one decode each would be 256 and more


def test_api_requests_give_way_to_the_terminal_chat_when_the_pool_is_full(pool_engine: Engine) -> None:
    # Three API requests that would fill the pool (3 x (150 + 400) > 1024), then the chat's (interactive).
    api: list[tuple[int, str]] = []
    started = [threading.Event() for _ in range(3)]
    threads = [threading.Thread(target=lambda i=i, w=w: api.append(run(
        pool_engine, GenerationRequest(prompt(pool_engine, 150, w), 400, GREEDY_ENDLESS), started[i])))
        for i, w in enumerate(("x ", "y ", "z "))]
    for thread in threads:
        thread.start()
    for event in started:
        assert event.wait(60)
    chat = run(pool_engine, GenerationRequest(prompt(pool_engine, 200, "hello "), 300, GREEDY_ENDLESS, interactive=True))
    for thread in threads:
        thread.join()
    assert chat == (300, "length")  # the whole reply it asked for: its conversation goes on
    assert any(n < 400 for n, _ in api) and all(reason == "length" for _, reason in api), api
    # Afterwards the pool serves a request of nearly its whole size again.
    assert run(pool_engine, GenerationRequest(prompt(pool_engine, 900), 100, GREEDY_ENDLESS)) == (100, "length")


def test_a_prompt_waits_for_room_instead_of_failing(pool_engine: Engine) -> None:
    # A long generation holds most of the pool; a second request's prompt does not fit beside it: it
    # waits (no error), and runs once the first has ended.
    first_started = threading.Event()
    outcome: list[tuple[int, str]] = []
    first = threading.Thread(target=lambda: outcome.append(run(
        pool_engine, GenerationRequest(prompt(pool_engine, 100, "q "), 800, GREEDY_ENDLESS), first_started)))
    first.start()
    assert first_started.wait(60)
    time.sleep(0.5)
    second = run(pool_engine, GenerationRequest(prompt(pool_engine, 600, "r "), 50, GREEDY_ENDLESS))
    first.join()
    assert second == (50, "length")
    assert outcome == [(800, "length")]  # the one answering was not cut for it


@pytest.mark.slow
def test_a_tool_call_with_c_2048_np_4_is_not_cut(tiny_bundle: Path, tmp_path: Path) -> None:
    """The defect: with -c split four ways, the tool prompt took 492 of its 512 tokens and the call was cut
    after 21 (finish_reason length). One pool gives the request the room it needs."""
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}\n</tool_call>'
    grammar = 'root ::= "' + "".join(f"\\x{ord(c):02X}" if c in '"\\\n' else c for c in call) + '"'
    model = write_tiny_gguf(tmp_path / "qwen.gguf", n_ctx=4096, chat_template=QWEN25)
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather forecast for a city " * 12,
                                               "parameters": {"type": "object", "properties": {
                                                   "city": {"type": "string"}, "days": {"type": "integer"}}}}}]
    with running_server(tiny_bundle, "-m", str(model), "-c", "2048", "-np", "4", "--grammar", grammar,
                        log_path=tmp_path / "server.log") as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=120)
        answer = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Paris, 3 days?"}],
                                                tools=tools, tool_choice="required", max_tokens=400, temperature=0)
        assert answer.usage.prompt_tokens > 2048 // 4, answer.usage
        assert answer.choices[0].finish_reason == "tool_calls", answer
        assert answer.choices[0].message.tool_calls[0].function.name == "get_weather"
        root = server.base_url.removesuffix("v1")
        props = httpx.get(root + "props", timeout=30).json()
        assert (props["kv_unified"], props["n_ctx_pool"], props["n_ctx"], props["total_slots"]) == (True, 2048, 2048, 4)
        slots = httpx.get(root + "slots", timeout=30).json()
        assert [(s["kv_unified"], s["n_ctx"]) for s in slots] == [(True, 2048)] * 4
        assert "context  2048 tokens (-c 2048: one pool shared by -np 4)" in server.log or \
               "2048 tokens (-c 2048: one pool shared by -np 4)" in server.log, server.log
