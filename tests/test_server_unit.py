"""The server's app in-process with a fake engine: error mapping, limits, auth, loading state, metrics.
(The real executable and the official client are in test_server_openai.py.)"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from llmpack.runtime.engine.types import (
    EngineConfig,
    FimTokens,
    GenerationRequest,
    Piece,
    Timings,
    TokenLogprob,
)
from llmpack.runtime.errors import ContextOverflow, EngineFailure, GrammarInvalid
from llmpack.runtime.flags.settings import Settings
from llmpack.runtime.server import mode as server_mode
from llmpack.runtime.server.state import EngineHolder
from support.apps import app_for

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


class FakeEngine:
    """Tokens are characters; the answer is always 'hello world', one character per token."""

    chat_template = CHATML
    bos_token = ""
    eos_token = "</s>"
    model_name = "fake-model"
    n_ctx = 64
    n_ctx_train = 64
    n_vocab = 256
    n_embd = 4
    fim_tokens = FimTokens()  # no fill-in-the-middle tokens
    pooling = "none"
    sequences_in_use: frozenset[int] = frozenset()

    def __init__(self, answer: str = "hello world", fail_after: int | None = None) -> None:
        self.answer = answer
        self.fail_after = fail_after
        self.config = EngineConfig(embeddings=False)
        self.requests: list[GenerationRequest] = []

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        return [ord(c) % 256 for c in text]

    def check_grammar(self, grammar: str) -> None:
        if "::=" not in grammar:
            raise GrammarInvalid()

    def check_fits(self, n_prompt_tokens: int) -> None:
        if n_prompt_tokens >= self.n_ctx:
            raise ContextOverflow(n_prompt_tokens, self.n_ctx)

    def token_bytes(self, token: int, special: bool = False) -> bytes:
        return bytes([token])

    def token_text(self, token: int) -> str:
        return chr(token)

    def detokenize(self, tokens, special: bool = False) -> str:
        return "".join(chr(t) for t in tokens)

    def generate(self, request: GenerationRequest, cancel: threading.Event | None = None) -> Iterator[Piece]:
        self.requests.append(request)
        limit = len(self.answer) if request.max_tokens < 0 else min(request.max_tokens, len(self.answer))
        for i, ch in enumerate(self.answer[:limit]):
            if self.fail_after is not None and i == self.fail_after:
                raise EngineFailure("llama.cpp failed to evaluate the prompt (llama_decode returned 1)")
            logprobs = (TokenLogprob(ord(ch), -0.5, ((ord(ch), -0.5), (0, -2.0))),) if request.logprobs is not None else ()
            yield Piece(ch, (ord(ch),), logprobs=logprobs)
        finish = "length" if limit < len(self.answer) else "stop"
        yield Piece("", (), finish, Timings(len(request.prompt_tokens), 0, 1.0, limit, 2.0))

    def embed(self, tokens, normalize: bool = True) -> list[float]:
        raise EngineFailure("error: embeddings are off: start with --embedding")  # config.embeddings is False

    def embed_each(self, tokens) -> list[list[float]]:
        raise EngineFailure("error: embeddings are off: start with --embedding")

    def special_tokens(self) -> dict[str, int | None]:
        return {"bos": None, "eos": None, "sep": None}

    def close(self) -> None:
        pass

    def start(self, request: GenerationRequest, cancel: threading.Event, deliver) -> None:
        """The engine's event-driven interface: pieces handed over from another thread, as the real
        engine's decoding thread does."""
        def run() -> None:
            try:
                for piece in self.generate(request, cancel):
                    deliver(piece)
            except EngineFailure as exc:
                deliver(exc)

        threading.Thread(target=run, daemon=True).start()


LOCAL = "http://localhost"


def make_client(engine=None, api_key: str | None = None, loaded: bool = True, **kwargs) -> TestClient:
    settings = Settings(api_key=api_key)
    holder = EngineHolder(settings)
    if loaded:
        holder.set_engine(engine or FakeEngine())
    # localhost: TestClient's default Host, "testserver", is a name the server refuses (DNS rebinding).
    return TestClient(app_for(settings, holder, **kwargs), raise_server_exceptions=False, base_url=LOCAL)


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"] and set(body["error"]) >= {"message", "type", "param", "code"}
    return body["error"]


CHAT = {"messages": [{"role": "user", "content": "hi"}]}


def test_health_and_models_while_loading_then_ready() -> None:
    settings = Settings()
    holder = EngineHolder(settings)
    client = TestClient(app_for(settings, holder), base_url=LOCAL)
    assert client.get("/health").status_code == 503
    loading = client.post("/v1/chat/completions", json=CHAT)
    assert error_of(loading, 503)["code"] == "model_loading" and loading.headers["retry-after"] == "1"
    assert client.get("/metrics").text.count("llmpack_model_loaded 0") == 1
    holder.set_engine(FakeEngine())
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/v1/models").json()["data"][0]["id"] == "fake-model"


def test_health_reports_a_failed_load() -> None:
    holder = EngineHolder(Settings())
    holder.set_error(RuntimeError("no such file"))
    client = TestClient(app_for(Settings(), holder))
    assert "no such file" in error_of(client.get("/health"), 503)["message"]


def test_sampling_fields_reach_the_engine() -> None:
    engine = FakeEngine()
    client = make_client(engine)
    body = {**CHAT, "temperature": 0.3, "top_p": 0.5, "top_k": 7, "min_p": 0.1, "seed": 42, "stop": "XY",
            "presence_penalty": 0.5, "frequency_penalty": -0.5, "max_tokens": 5}
    answer = client.post("/v1/chat/completions", json=body).json()
    request = engine.requests[-1]
    s = request.sampling
    assert (s.temperature, s.top_p, s.top_k, s.min_p, s.seed) == (0.3, 0.5, 7, 0.1, 42)
    assert (s.presence_penalty, s.frequency_penalty, request.max_tokens) == (0.5, -0.5, 5)
    assert request.stop == ("XY", "<|im_end|>")  # the template's end-of-turn marker is added
    assert answer["choices"][0]["message"]["content"] == "hello"
    assert answer["choices"][0]["finish_reason"] == "length"
    assert isinstance(answer["usage"].pop("prompt_tokens_details")["cached_tokens"], int)
    assert answer["usage"] == {"prompt_tokens": len(request.prompt_tokens), "completion_tokens": 5,
                               "total_tokens": len(request.prompt_tokens) + 5}
    # Defaults are the server's flags (llamafile's 0.8 for the server) when a field is absent.
    client.post("/v1/chat/completions", json=CHAT)
    assert engine.requests[-1].sampling.temperature == 0.8 and engine.requests[-1].max_tokens == -1


def test_response_format_becomes_a_grammar() -> None:
    engine = FakeEngine()
    client = make_client(engine)
    client.post("/v1/chat/completions", json={**CHAT, "response_format": {"type": "json_object"}})
    assert engine.requests[-1].sampling.grammar.startswith("root ::= object")
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    client.post("/v1/chat/completions", json={**CHAT, "response_format": {
        "type": "json_schema", "json_schema": {"name": "x", "schema": schema}}})
    assert '"\\"a\\"" ws ":" ws integer' in engine.requests[-1].sampling.grammar
    missing = client.post("/v1/chat/completions", json={**CHAT, "response_format": {"type": "json_schema"}})
    assert error_of(missing, 400)["param"] == "response_format.json_schema"


def test_streamed_chat_chunks() -> None:
    client = make_client()
    with client.stream("POST", "/v1/chat/completions",
                       json={**CHAT, "stream": True, "stream_options": {"include_usage": True}, "logprobs": True,
                             "top_logprobs": 1}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line.removeprefix("data: ") for line in response.iter_lines() if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": None}  # llama-server's first chunk
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == "hello world"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 11
    assert chunks[-1]["timings"]["predicted_n"] == 11  # llama-server's timings beside the usage
    assert chunks[1]["choices"][0]["logprobs"]["content"][0]["top_logprobs"][0]["logprob"] == -0.5


def test_an_engine_failure_mid_stream_is_an_error_event() -> None:
    client = make_client(FakeEngine(fail_after=3))
    with client.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as response:
        assert response.status_code == 200
        events = [line.removeprefix("data: ") for line in response.iter_lines() if line]
    error = json.loads(events[-2])["error"]
    assert error["type"] == "server_error" and "llama_decode" in error["message"]
    assert events[-1] == "[DONE]"
    plain = make_client(FakeEngine(fail_after=3)).post("/v1/chat/completions", json=CHAT)
    assert error_of(plain, 500)["message"].startswith("llama.cpp failed")


@pytest.mark.parametrize("stream", [False, True])
def test_context_overflow_is_400_with_counts_before_any_chunk(stream: bool) -> None:
    response = make_client().post("/v1/chat/completions",
                                  json={"messages": [{"role": "user", "content": "x" * 100}], "stream": stream})
    error = error_of(response, 400)
    assert error["type"] == "exceed_context_size_error" and error["code"] == "context_length_exceeded"
    assert error["n_ctx"] == 64 and error["n_prompt_tokens"] > 100
    assert not error["message"].startswith("error:")


@pytest.mark.parametrize("path, body", [
    ("/v1/chat/completions", b"{"),
    ("/v1/chat/completions", b"[]"),
    ("/v1/chat/completions", b"null"),
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": 5}]}'),
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "x"}], "stream": "maybe"}'),
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "x"}], "top_logprobs": 99}'),
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "x"}], "stop": 3}'),
    ("/v1/chat/completions", b'{"messages": [{"role": "tool", "content": "x"}]}'),
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}'),
    ("/v1/completions", b'{"prompt": ""}'),
    ("/v1/completions", b'{"prompt": ["a", "b"]}'),
    ("/v1/completions", b'{"prompt": [99999]}'),
    ("/v1/completions", b'{"prompt": "x", "suffix": "y"}'),
    ("/v1/completions", b'{"prompt": {"a": 1}}'),
    ("/v1/completions", b'{"prompt": "x", "grammar": "not gbnf", "stream": true}'),
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "x"}], "grammar": "no", "stream": true}'),
    ("/v1/embeddings", b'{"input": "x"}'),
    ("/tokenize", b'{"content": 5}'),
    ("/detokenize", b'{"tokens": [-1]}'),
    ("/detokenize", b'{"tokens": "abc"}'),
])
def test_bad_input_is_a_4xx_in_openai_shape(path: str, body: bytes) -> None:
    response = make_client().post(path, content=body, headers={"content-type": "application/json"})
    error = error_of(response, 400)
    assert error["type"] == "invalid_request_error" and error["message"]


def test_validation_errors_name_the_field() -> None:
    error = error_of(make_client().post("/v1/chat/completions", json={**CHAT, "temperature": -1}), 400)
    assert error["param"] == "temperature" and "greater than or equal to 0" in error["message"]
    error = error_of(make_client().post("/v1/chat/completions", json={"messages": [{"content": "x"}]}), 400)
    assert error["param"] == "messages.0.role"


def test_form_encoded_bodies_are_refused_unlike_llama_cpp() -> None:
    # Any web page can POST a form-encoded body cross-site without a preflight (test_server_security.py).
    response = make_client().post("/tokenize", content=b'{"content": "ab"}',
                                  headers={"content-type": "application/x-www-form-urlencoded"})
    assert error_of(response, 415)["code"] == "unsupported_media_type"


def test_unknown_routes_and_methods() -> None:
    client = make_client()
    assert error_of(client.get("/v2/whatever"), 404)["message"] == "unknown route: GET /v2/whatever"
    assert error_of(client.delete("/v1/chat/completions"), 405)["code"] == "method_not_allowed"


def test_body_limit_by_length_and_while_streaming_a_body() -> None:
    client = make_client(max_body_bytes=1000)
    big = json.dumps({"prompt": "x" * 2000}).encode()
    assert error_of(client.post("/v1/completions", content=big), 413)["code"] == "request_too_large"

    def chunked() -> Iterator[bytes]:  # no Content-Length: counted while reading
        for i in range(0, len(big), 100):
            yield big[i:i + 100]

    assert error_of(client.post("/v1/completions", content=chunked()), 413)["code"] == "request_too_large"
    assert client.post("/v1/completions", json={"prompt": "x" * 30, "max_tokens": 2}).status_code == 200


def test_api_key() -> None:
    client = make_client(api_key="k1")
    for path in ("/v1/models", "/metrics"):
        assert error_of(client.get(path), 401)["code"] == "invalid_api_key"
        assert client.get(path, headers={"Authorization": "Bearer k1"}).status_code == 200
    assert error_of(client.post("/v1/chat/completions", json=CHAT, headers={"Authorization": "k1"}), 401)
    assert client.get("/health").status_code == 200 and client.get("/").status_code == 200
    assert client.get("/v1/models").headers["www-authenticate"] == "Bearer"


def test_metrics_text_format() -> None:
    client = make_client()
    client.post("/v1/chat/completions", json=CHAT)
    client.post("/v1/chat/completions", json={"messages": []})
    text = client.get("/metrics").text
    sample = re.compile(r'^[a-z_:]+(\{[a-z_]+="[^"]*"\})? -?[0-9.e+-]+$')
    for line in text.splitlines():
        assert line.startswith(("# HELP ", "# TYPE ")) or sample.match(line), line
    assert 'llmpack_requests_total{route="chat"} 2' in text
    assert 'llmpack_errors_total{status="400"} 1' in text
    assert "llmpack_generated_tokens_total 11" in text


def test_web_page_streams_from_the_chat_route() -> None:
    page = make_client().get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'fetch(path' in page.text and '"/v1/chat/completions"' in page.text and "stream: true" in page.text
    assert not re.search(r"""(src|href)=["']?https?://""", page.text)  # nothing from a CDN


def test_a_browser_opens_only_with_a_display(monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []
    monkeypatch.setattr(server_mode.webbrowser, "open", lambda url, new=0: opened.append(url) or True)
    monkeypatch.setattr(server_mode.sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert server_mode.open_browser("http://127.0.0.1:1/") is False and opened == []
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    assert server_mode.open_browser("http://127.0.0.1:1/") is True and opened == ["http://127.0.0.1:1/"]


def test_server_url_for_wildcard_and_ipv6_hosts() -> None:
    with server_mode.bind_socket("127.0.0.1", 0) as sock:
        port = sock.getsockname()[1]
        assert server_mode.server_url("127.0.0.1", sock) == f"http://127.0.0.1:{port}/"
        assert server_mode.server_url("0.0.0.0", sock) == f"http://127.0.0.1:{port}/"
        assert server_mode.server_url("::1", sock) == f"http://[::1]:{port}/"


def _rendered_prompt(engine: FakeEngine, settings: Settings, messages: list[dict]) -> str:
    engine.n_ctx = 512
    holder = EngineHolder(settings)
    holder.set_engine(engine)
    client = TestClient(app_for(settings, holder), raise_server_exceptions=False, base_url=LOCAL)
    assert client.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 1}).status_code == 200
    return engine.detokenize(engine.requests[-1].prompt_tokens)


def test_chat_template_fallback_and_override() -> None:
    untemplated = FakeEngine()
    untemplated.chat_template = None
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    assert _rendered_prompt(untemplated, Settings(), messages) == \
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
    engine = FakeEngine()  # its own template is ChatML; --chat-template gemma wins
    gemma = _rendered_prompt(engine, Settings(chat_template="gemma"), [{"role": "user", "content": "U"}])
    assert gemma == "<start_of_turn>user\nU<end_of_turn>\n<start_of_turn>model\n"
    assert "<end_of_turn>" in engine.requests[-1].stop
