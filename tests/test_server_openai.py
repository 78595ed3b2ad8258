"""End to end: the real executable (built from the tiny GGUF) in --server mode, used by the official
`openai` client with strict response validation, and by httpx for raw HTTP."""

from __future__ import annotations

import base64
import json
import math
import re
import struct
import threading
from pathlib import Path

import httpx
import openai
import pytest
from support.server_fixtures import ServerProcess, running_server

pytestmark = pytest.mark.slow

MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def server(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory):
    log = tmp_path_factory.mktemp("server") / "server.log"
    with running_server(tiny_bundle, "-c", "512", log_path=log) as running:
        yield running


@pytest.fixture()
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0,
                         _strict_response_validation=True, timeout=60)


def test_models(client: openai.OpenAI, server: ServerProcess) -> None:
    """The model is named by its file, as llama-server and llamafile name it: the executable's name without
    its extension (tiny.llmpack), not the GGUF's general.name, which stays in /props."""
    models = client.models.list()
    assert [m.id for m in models.data] == ["tiny"]
    assert models.data[0].model_extra["aliases"] == ["tiny"] and models.data[0].model_extra["tags"] == []
    assert client.models.retrieve("tiny").id == "tiny"
    answer = client.chat.completions.create(model="any", messages=MESSAGES, max_tokens=1)
    assert answer.model == "tiny"
    assert httpx.get(server.url + "props", timeout=10).json()["general_name"] == "tiny-test-model"


def test_alias_names_the_model(tiny_bundle: Path, tmp_path: Path) -> None:
    """-a takes llama-server's comma-separated aliases (the first in sorted order is the id, as its
    std::set makes it) and --tags its tags; every alias is a name the model answers to."""
    with running_server(tiny_bundle, "-a", "tinyllama-2, fim,code", "--tags", "chat,small",
                        log_path=tmp_path / "server.log") as aliased:
        client = openai.OpenAI(base_url=aliased.base_url, api_key="-", max_retries=0,
                               _strict_response_validation=True, timeout=60)
        [model] = client.models.list().data
        assert model.id == "code"
        assert model.model_extra["aliases"] == ["code", "fim", "tinyllama-2"]
        assert model.model_extra["tags"] == ["chat", "small"]
        assert client.models.retrieve("fim").id == "fim"
        with pytest.raises(openai.NotFoundError):
            client.models.retrieve("tiny")
        assert client.chat.completions.create(model="x", messages=MESSAGES, max_tokens=1).model == "code"
        props = httpx.get(aliased.url + "props", timeout=10).json()
        assert (props["model_alias"], props["general_name"]) == ("code", "tiny-test-model")


def test_chat_completion_with_a_system_prompt_gemma_rejects(client: openai.OpenAI) -> None:
    """The tiny model carries Gemma 2's template, which raises on a system message: it is folded into
    the first user turn instead of failing (llama-cpp-python answers 500 there)."""
    answer = client.chat.completions.create(model="tiny-test-model", messages=MESSAGES, max_tokens=12,
                                            temperature=0)
    choice = answer.choices[0]
    assert answer.object == "chat.completion" and answer.id.startswith("chatcmpl-")
    assert choice.message.role == "assistant" and choice.finish_reason in ("stop", "length")
    assert answer.usage.prompt_tokens > 10 and 0 < answer.usage.completion_tokens <= 12
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
    if choice.finish_reason == "length":
        assert answer.usage.completion_tokens == 12


def test_max_tokens_and_max_completion_tokens(client: openai.OpenAI) -> None:
    for field in ("max_tokens", "max_completion_tokens"):
        answer = client.chat.completions.create(model="m", messages=MESSAGES, temperature=0,
                                                **{field: 3})
        assert answer.usage.completion_tokens <= 3
        assert answer.choices[0].finish_reason == ("length" if answer.usage.completion_tokens == 3 else "stop")


def test_streamed_chat(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=16, temperature=0.7,
                                                 seed=7, stream=True, stream_options={"include_usage": True}))
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    content_chunks, usage_chunk = chunks[:-1], chunks[-1]
    assert content_chunks[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.role is None for c in content_chunks[1:])  # role only in the first
    assert all(c.usage is None for c in content_chunks)
    assert content_chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert all(c.choices[0].finish_reason is None for c in content_chunks[:-1])
    assert usage_chunk.choices == [] and usage_chunk.usage is not None  # usage last
    text = "".join(c.choices[0].delta.content or "" for c in content_chunks)
    assert usage_chunk.usage.completion_tokens <= 16 and text
    # The same seed gives the same answer, streamed or not.
    plain = client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=16, temperature=0.7, seed=7)
    assert plain.choices[0].message.content == text
    # The same counts; the repeated prompt may be found in the cache (prompt_tokens_details) the second time.
    assert plain.usage.model_dump(exclude={"prompt_tokens_details"}) == \
        usage_chunk.usage.model_dump(exclude={"prompt_tokens_details"})


def test_penalties_are_accepted(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=8, temperature=0,
                                            presence_penalty=1.5, frequency_penalty=0.5,
                                            extra_body={"repeat_penalty": 1.3})
    assert answer.usage.completion_tokens > 0


def test_stop_strings(client: openai.OpenAI) -> None:
    full = client.completions.create(model="m", prompt="the cat and the dog", max_tokens=24, temperature=0)
    text = full.choices[0].text
    stop = text[len(text) // 2: len(text) // 2 + 2]
    assert len(stop) == 2 and stop in text
    stopped = client.completions.create(model="m", prompt="the cat and the dog", max_tokens=24, temperature=0,
                                        stop=[stop, "never-generated"])
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.choices[0].text == text[:text.index(stop)]


def test_completions_plain_streamed_and_echo(client: openai.OpenAI) -> None:
    plain = client.completions.create(model="m", prompt="four score and seven", max_tokens=10, temperature=1.0,
                                      seed=3)
    assert plain.object == "text_completion" and plain.choices[0].finish_reason in ("stop", "length")
    assert plain.usage.completion_tokens <= 10 and plain.usage.prompt_tokens > 3
    # Not strict here: the SDK types a completion choice's finish_reason as never null, yet streams (of
    # OpenAI's own API too) carry null until the last chunk. The raw chunks are checked below instead.
    lenient = openai.OpenAI(base_url=client.base_url, api_key="unused", max_retries=0)
    chunks = list(lenient.completions.create(model="m", prompt="four score and seven", max_tokens=10,
                                             temperature=1.0, seed=3, stream=True,
                                             stream_options={"include_usage": True}))
    assert len({c.id for c in chunks}) == 1 and all(c.object == "text_completion" for c in chunks)
    assert [c.choices[0].finish_reason for c in chunks[:-1]][-1] == plain.choices[0].finish_reason
    assert all(c.choices[0].finish_reason is None for c in chunks[:-2])
    assert "".join(c.choices[0].text for c in chunks if c.choices) == plain.choices[0].text
    assert chunks[-1].usage.model_dump(exclude={"prompt_tokens_details"}) == \
        plain.usage.model_dump(exclude={"prompt_tokens_details"})
    echoed = client.completions.create(model="m", prompt="four score and seven", max_tokens=10,
                                       temperature=1.0, seed=3, echo=True)
    assert echoed.choices[0].text == "four score and seven" + plain.choices[0].text


def test_logprobs_of_a_greedy_chat(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=8, temperature=0,
                                            logprobs=True, top_logprobs=3)
    content = answer.choices[0].logprobs.content
    assert len(content) == answer.usage.completion_tokens
    for entry in content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
        # Greedy decoding picks the most likely token: it heads its own top list.
        assert entry.top_logprobs[0].token == entry.token
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob)
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[1].logprob >= entry.top_logprobs[2].logprob
    total = sum(math.exp(t.logprob) for t in content[0].top_logprobs)
    assert total <= 1.0 + 1e-6


def test_json_schema_response_format(client: openai.OpenAI) -> None:
    """Grammar-constrained through llama.cpp: even random weights can only write a matching document
    (bounded strings, so it always ends)."""
    schema = {"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 6}, "age": {"type": "integer"},
        "pet": {"enum": ["cat", "dog"]}, "tags": {"type": "array", "items": {"type": "boolean"}, "maxItems": 2}},
        "required": ["name", "age", "pet", "tags"]}
    for seed in (1, 2, 3):
        answer = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "describe a person"}], max_tokens=300,
            temperature=1.0, seed=seed,
            response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema}})
        assert answer.choices[0].finish_reason == "stop"
        document = json.loads(answer.choices[0].message.content)
        assert list(document) == ["name", "age", "pet", "tags"]
        # (maxLength is not asserted: llama.cpp counts the code points of the raw bytes, and random
        # weights write invalid UTF-8 that decodes to more replacement characters than that.)
        assert isinstance(document["name"], str)
        assert isinstance(document["age"], int) and document["pet"] in ("cat", "dog")
        assert len(document["tags"]) <= 2 and all(isinstance(t, bool) for t in document["tags"])


def test_json_object_response_format_starts_an_object(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "json"}],
                                            max_tokens=20, temperature=1.0, seed=5,
                                            response_format={"type": "json_object"})
    assert answer.choices[0].message.content.startswith("{")


def test_tokenize_detokenize_round_trip(server: ServerProcess) -> None:
    tokens = httpx.post(server.url + "tokenize", json={"content": "hello world"}).json()["tokens"]
    assert tokens and all(isinstance(t, int) for t in tokens)
    with_bos = httpx.post(server.url + "tokenize", json={"content": "hello world", "add_special": True}).json()
    assert with_bos["tokens"] == [1, *tokens]
    # SentencePiece's word-start marker comes back as a space, as from llama.cpp's own /detokenize.
    assert httpx.post(server.url + "detokenize", json={"tokens": tokens}).json() == {"content": " hello world"}
    pieces = httpx.post(server.url + "tokenize", json={"content": "hello", "with_pieces": True}).json()["tokens"]
    assert "".join(p["piece"] for p in pieces) == "▁hello".replace("▁", " ")


def _stream_chat(server: ServerProcess, results: list, index: int) -> None:
    client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0,
                           _strict_response_validation=True, timeout=120)
    chunks = list(client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": f"client {index} says hello"}], max_tokens=40,
        temperature=0.9, seed=index, stream=True, stream_options={"include_usage": True}))
    results[index] = chunks


def test_four_concurrent_streaming_clients_all_complete(server: ServerProcess) -> None:
    results: list = [None] * 4
    threads = [threading.Thread(target=_stream_chat, args=(server, results, i)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(r is not None for r in results), "a client failed (see the thread's exception above)"
    assert len({chunks[0].id for chunks in results}) == 4
    for chunks in results:
        finish = chunks[-2].choices[0].finish_reason
        usage = chunks[-1].usage
        assert finish in ("stop", "length")
        # Nobody was cut off: a 'length' finish means all 40 tokens came.
        assert usage.completion_tokens == 40 if finish == "length" else usage.completion_tokens <= 40


def test_metrics_are_prometheus_text(server: ServerProcess) -> None:
    response = httpx.get(server.url + "metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    assert '# TYPE llmpack_requests_total counter' in response.text
    assert 'llmpack_requests_total{route="chat"}' in response.text
    values = server.metrics()
    assert values["llmpack_generated_tokens_total"] > 0 and values["llmpack_model_loaded"] == 1
    assert values["llmpack_requests_queued"] == 0 and values["llmpack_requests_generating"] == 0


def test_web_page_is_served_without_external_resources(server: ServerProcess) -> None:
    page = httpx.get(server.url)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/v1/chat/completions" in page.text
    # No CDN: nothing in the page's markup or style loads from another host (the inlined libraries'
    # code mentions URLs in strings, which load nothing), and the policy forbids other origins anyway;
    # tests/test_server_web.py watches Chromium's real network requests.
    assert not re.search(r"""(?:src|href|action)\s*=\s*["']?(?:https?:)?//""", page.text, re.I)
    styles = " ".join(re.findall(r"<style[^>]*>(.*?)</style>", page.text, re.S | re.I))
    assert styles and not re.search(r"""url\(\s*["']?(?:https?:)?//|@import""", styles, re.I)
    policy = dict(part.strip().split(" ", 1) for part in page.headers["content-security-policy"].split(";"))
    assert policy["default-src"] == "'self'"
    # Only fetch() may reach other origins: the MCP servers the user adds in the settings (web/mcp.js);
    # scripts, styles, images and fonts come from the page itself.
    assert [name for name, sources in policy.items() if "http" in sources] == ["connect-src"]


# -- errors ------------------------------------------------------------------------------------


def _error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and {"message", "type", "param", "code"} <= set(body["error"])
    return body["error"]


def test_bad_requests_are_400_never_500(server: ServerProcess) -> None:
    url = server.base_url + "/chat/completions"
    bad_json = _error(httpx.post(url, content=b"{not json", headers={"content-type": "application/json"}), 400)
    assert bad_json["type"] == "invalid_request_error" and "not valid JSON" in bad_json["message"]
    wrong_type = _error(httpx.post(url, json={"messages": "hi"}), 400)
    assert wrong_type["param"] == "messages"
    _error(httpx.post(url, json={"messages": []}), 400)
    _error(httpx.post(url, json=[1, 2]), 400)
    _error(httpx.post(url, json={"messages": [{"role": "wizard", "content": "x"}]}), 400)
    assert _error(httpx.post(url, json={"messages": MESSAGES, "temperature": "hot"}), 400)["param"] == "temperature"
    assert _error(httpx.post(url, json={"messages": MESSAGES, "n": 1000}), 400)["param"] == "n"  # above -np
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]
    assert "only text" in _error(httpx.post(url, json={"messages": image}), 400)["message"]
    alternating = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    assert "chat template" in _error(httpx.post(url, json={"messages": alternating}), 400)["message"]
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string", "pattern": "(?<=a)b"}}}
    assert "pattern" in _error(httpx.post(url, json={"messages": MESSAGES, "response_format": schema}), 400)["message"]
    surrogate = b'{"messages": [{"role": "user", "content": "\\ud800"}], "stream": true}'
    assert "surrogate" in _error(httpx.post(url, content=surrogate, headers={"content-type": "application/json"}),
                                 400)["message"]
    bad_grammar = {"messages": MESSAGES, "grammar": "root ::= undefined-rule", "stream": True}
    assert _error(httpx.post(url, json=bad_grammar), 400)["code"] == "invalid_grammar"  # llama.cpp's parser
    assert _error(httpx.post(server.url + "detokenize", json={"tokens": [10 ** 6]}), 400)["param"] == "tokens.0"
    assert "embedding" in _error(httpx.post(server.base_url + "/embeddings", json={"input": "x"}), 400)["message"]


def test_unknown_route_is_404_json(server: ServerProcess) -> None:
    assert _error(httpx.get(server.url + "v1/nothing-here"), 404)["code"] == "not_found"
    assert _error(httpx.get(server.base_url + "/chat/completions"), 405)["code"] == "method_not_allowed"


def test_body_over_the_limit_is_413(server: ServerProcess) -> None:
    big = {"model": "m", "prompt": "x" * (9 * 1024 * 1024)}
    error = _error(httpx.post(server.base_url + "/completions", json=big, timeout=60), 413)
    assert "limit" in error["message"]


@pytest.mark.parametrize("stream", [False, True])
def test_prompt_longer_than_the_context_is_400_with_counts(server: ServerProcess, client: openai.OpenAI,
                                                           stream: bool) -> None:
    long = [{"role": "user", "content": "the cat " * 400}]
    response = httpx.post(server.base_url + "/chat/completions", json={"messages": long, "stream": stream})
    error = _error(response, 400)  # a plain 400 before any chunk, even when streaming
    # A request's context: -c shared among the -np sequences (the model's reports what it is).
    n_ctx = httpx.get(server.base_url + "/models").json()["data"][0]["meta"]["n_ctx"]
    assert error["type"] == "exceed_context_size_error" and error["n_ctx"] == n_ctx
    assert error["n_prompt_tokens"] > 512 and str(error["n_prompt_tokens"]) in error["message"]
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="m", messages=long, stream=stream)
    assert raised.value.code == "context_length_exceeded"


def test_embeddings(tiny_bundle: Path, tmp_path: Path) -> None:
    with running_server(tiny_bundle, "--embedding", "-c", "512", log_path=tmp_path / "server.log") as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0,
                               _strict_response_validation=True)
        result = client.embeddings.create(model="m", input=["hello world", "the cat", "hello world"],
                                          encoding_format="float")
        vectors = [d.embedding for d in result.data]
        assert [d.index for d in result.data] == [0, 1, 2] and result.usage.prompt_tokens > 6
        assert all(len(v) == 64 for v in vectors)
        assert all(sum(x * x for x in v) == pytest.approx(1.0, abs=1e-4) for v in vectors)
        assert vectors[0] == pytest.approx(vectors[2]) and vectors[0] != pytest.approx(vectors[1])
        floats = httpx.post(server.base_url + "/embeddings",
                            json={"input": "the cat", "encoding_format": "float"}).json()["data"][0]["embedding"]
        encoded = httpx.post(server.base_url + "/embeddings",
                             json={"input": "the cat", "encoding_format": "base64"}).json()["data"][0]["embedding"]
        assert floats == pytest.approx(vectors[1], abs=1e-6)
        assert list(struct.unpack("<64f", base64.b64decode(encoded))) == pytest.approx(floats, abs=1e-6)
        # By default the SDK asks for base64 and decodes it after validation, which strict mode would
        # reject before decoding (whatever the server): checked without it.
        lenient = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)
        decoded = lenient.embeddings.create(model="m", input="the cat").data[0].embedding
        assert list(decoded) == pytest.approx(floats, abs=1e-6)
        # Generation still works on an engine that embeds.
        chat = client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=4)
        assert chat.usage.completion_tokens > 0
        assert server.interrupt() == 0


def test_api_key(tiny_bundle: Path, tmp_path: Path) -> None:
    with running_server(tiny_bundle, "--api-key", "sesame", "-c", "512", log_path=tmp_path / "server.log") as server:
        for method, path in (("GET", "v1/models"), ("POST", "v1/chat/completions"), ("POST", "v1/completions"),
                             ("POST", "v1/embeddings"), ("POST", "tokenize"), ("GET", "metrics")):
            missing = httpx.request(method, server.url + path, json={})
            assert _error(missing, 401)["code"] == "invalid_api_key"
            wrong = httpx.request(method, server.url + path, json={}, headers={"Authorization": "Bearer nope"})
            assert _error(wrong, 401)["message"] == "invalid API key"
        assert httpx.get(server.url + "health").status_code == 200  # probes need no key
        assert httpx.get(server.url).status_code == 200  # the page asks for the key itself
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=server.base_url, api_key="nope", max_retries=0).models.list()
        good = openai.OpenAI(base_url=server.base_url, api_key="sesame", max_retries=0,
                             _strict_response_validation=True)
        assert good.chat.completions.create(model="m", messages=MESSAGES, max_tokens=2).usage.completion_tokens > 0


def test_no_bad_request_left_a_traceback_or_a_500(server: ServerProcess) -> None:
    """Runs last in this module: after every bad request above, the server logged no traceback and
    answered no 500."""
    assert "Traceback" not in server.log and "Exception in ASGI application" not in server.log
    metrics = httpx.get(server.url + "metrics").text
    assert 'status="500"' not in metrics and 'status="400"' in metrics
