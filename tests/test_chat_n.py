"""End to end: `n` choices in /v1/chat/completions, each its own generation in the batching engine,
plain and streamed, bounded by -np."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest
from support.server_fixtures import ServerProcess, running_server

pytestmark = pytest.mark.slow

ASK = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def server(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory):
    with running_server(tiny_bundle, "-c", "1536", "-np", "3",
                        log_path=tmp_path_factory.mktemp("chat_n") / "server.log") as running:
        yield running


def client_for(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0,
                         _strict_response_validation=True, timeout=120)


def test_n3_plain(server: ServerProcess) -> None:
    answer = client_for(server).chat.completions.create(model="m", messages=ASK, n=3, max_tokens=12,
                                                        temperature=1.0, seed=7)
    assert [c.index for c in answer.choices] == [0, 1, 2]
    texts = [c.message.content for c in answer.choices]
    assert all(isinstance(t, str) for t in texts)
    assert len(set(texts)) > 1  # three generations (seeds 7, 8, 9), not one answer thrice
    assert 3 <= answer.usage.completion_tokens <= 36  # every choice's tokens


def test_n3_streamed_with_usage(server: ServerProcess) -> None:
    stream = client_for(server).chat.completions.create(model="m", messages=ASK, n=3, max_tokens=10,
                                                        temperature=1.0, seed=3, stream=True,
                                                        stream_options={"include_usage": True})
    texts = {0: "", 1: "", 2: ""}
    finishes: dict[int, str] = {}
    usage = None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                assert choice.index not in finishes
                finishes[choice.index] = choice.finish_reason
    assert sorted(finishes) == [0, 1, 2] and set(finishes.values()) <= {"stop", "length"}
    assert usage is not None and 3 <= usage.completion_tokens <= 30
    # The same request unstreamed gives the same three texts: each choice is its own seeded generation.
    plain = client_for(server).chat.completions.create(model="m", messages=ASK, n=3, max_tokens=10,
                                                       temperature=1.0, seed=3)
    assert [c.message.content for c in plain.choices] == [texts[0], texts[1], texts[2]]
    assert plain.usage.completion_tokens == usage.completion_tokens


def test_n_above_np_is_a_400(server: ServerProcess) -> None:
    response = httpx.post(server.base_url + "/chat/completions",
                          json={"messages": ASK, "n": 4, "max_tokens": 4}, timeout=30)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "n" and "-np" in error["message"], error
