"""End to end: the real executable (built from the tiny GGUF) in --server mode, used by the official
`ollama` Python client, unchanged, as if Ollama served the model; httpx for the raw shapes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import httpx
import ollama
import pytest
from fastapi.testclient import TestClient
from llmpack.runtime import messages
from llmpack.runtime.flags.settings import Settings
from llmpack.runtime.server.app import cancel_generations
from llmpack.runtime.server.state import EngineHolder
from support.apps import app_for
from support.forced_tools import forced_tool_server, hermes_call
from support.server_fixtures import ServerProcess, running_server
from support.tiny_model import write_tiny_gguf
from test_server_shutdown_stream import EndlessEngine

pytestmark = pytest.mark.slow

MODEL = "long"  # -m long.gguf: the weights' file name, as llama-server names a model
N_CTX = 4096
MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "hello there"}]
GREEDY = {"temperature": 0, "num_predict": 8}
# Bounded strings, so that even random weights end the document (see test_server_openai.py).
PERSON = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 6}, "age": {"type": "integer"}, "pet": {"enum": ["cat", "dog"]}},
    "required": ["name", "age", "pet"]}


@pytest.fixture(scope="module")
def server(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory):
    # A longer trained context than the tiny model's 512: a prompt that lists tools takes ~700 tokens.
    folder = tmp_path_factory.mktemp("ollama")
    gguf = write_tiny_gguf(folder / "long.gguf", n_ctx=N_CTX)
    with running_server(tiny_bundle, "-m", str(gguf), "-c", str(2 * N_CTX), "-np", "2", "--embedding",
                        log_path=folder / "server.log") as running:
        yield running


@pytest.fixture()
def client(server: ServerProcess) -> ollama.Client:
    return ollama.Client(host=server.url, timeout=60)


def _status(call) -> tuple[int, str]:
    with pytest.raises(ollama.ResponseError) as raised:
        call()
    return raised.value.status_code, raised.value.error


def test_an_alias_is_listed_and_answers(tiny_bundle: Path, tmp_path: Path) -> None:
    """-a renames the model for Ollama's clients too: NAME:latest, and every alias is a name it answers to."""
    with running_server(tiny_bundle, "-a", "my-model,other", log_path=tmp_path / "server.log") as aliased:
        client = ollama.Client(host=aliased.url, timeout=60)
        assert [m.model for m in client.list().models] == ["my-model:latest"]
        assert client.chat(model="other:latest", messages=MESSAGES, options={"num_predict": 1}).done
        status, _error = _status(lambda: client.chat(model="long", messages=MESSAGES))
        assert status == 404


def test_list_show_ps_version(server: ServerProcess, client: ollama.Client) -> None:
    listed = client.list().models
    assert [m.model for m in listed] == [f"{MODEL}:latest"]
    details = listed[0].details
    assert (details.format, details.family, details.quantization_level) == ("gguf", "llama", "F32")
    shown = client.show(MODEL)
    assert shown.details.family == "llama"
    assert shown.modelinfo["general.architecture"] == "llama"
    assert shown.modelinfo["llama.context_length"] == N_CTX  # numbers as numbers, as Ollama's model_info
    assert "<start_of_turn>" in shown.template
    assert "temperature" in shown.parameters and shown.modelfile.startswith("# Modelfile")
    assert "embedding" in shown.capabilities
    assert client.show(f"{MODEL}:latest").template == shown.template
    running = client.ps().models
    n_ctx = httpx.get(server.base_url + "/models").json()["data"][0]["meta"]["n_ctx"]
    assert [m.model for m in running] == [f"{MODEL}:latest"] and running[0].context_length == n_ctx
    assert httpx.get(server.url + "api/version").json()["version"].count(".") == 2


def test_chat_plain_and_streamed_agree(client: ollama.Client) -> None:
    answer = client.chat(model=MODEL, messages=MESSAGES, options=GREEDY, stream=False)
    assert answer.message.role == "assistant" and answer.message.content
    assert answer.done and answer.done_reason in ("stop", "length")
    assert 0 < answer.eval_count <= 8 and answer.prompt_eval_count > 5
    assert answer.total_duration >= answer.eval_duration > 0 and answer.prompt_eval_duration > 0
    parts = list(client.chat(model=f"{MODEL}:latest", messages=MESSAGES, options=GREEDY, stream=True))
    assert [p.done for p in parts] == [False] * (len(parts) - 1) + [True]
    assert "".join(p.message.content for p in parts) == answer.message.content
    assert parts[-1].eval_count == answer.eval_count and parts[-1].done_reason == answer.done_reason


def test_generate_is_the_prompt_as_the_users_turn(client: ollama.Client) -> None:
    chat = client.chat(model=MODEL, messages=MESSAGES, options=GREEDY)
    plain = client.generate(model=MODEL, system="You are terse.", prompt="hello there", options=GREEDY)
    assert plain.response == chat.message.content and plain.done
    streamed = list(client.generate(model=MODEL, system="You are terse.", prompt="hello there", options=GREEDY,
                                    stream=True))
    assert "".join(p.response for p in streamed) == plain.response and streamed[-1].done


def test_raw_generate_completes_the_prompt_as_it_is(server: ServerProcess, client: ollama.Client) -> None:
    raw = client.generate(model=MODEL, prompt="the cat and the", raw=True, options=GREEDY)
    completion = httpx.post(server.base_url + "/completions", timeout=60, json={
        "prompt": "the cat and the", "max_tokens": 8, "temperature": 0}).json()
    assert raw.response == completion["choices"][0]["text"]
    assert raw.prompt_eval_count == completion["usage"]["prompt_tokens"]
    streamed = list(client.generate(model=MODEL, prompt="the cat and the", raw=True, options=GREEDY, stream=True))
    assert "".join(p.response for p in streamed) == raw.response


def test_options_reach_the_sampler(client: ollama.Client) -> None:
    def sample(seed: int) -> str:
        return client.generate(model=MODEL, prompt="the dog", raw=True,
                               options={"temperature": 1.5, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "seed": seed,
                                        "num_predict": 12, "repeat_penalty": 1.1, "presence_penalty": 0.5,
                                        "frequency_penalty": 0.5, "num_ctx": 4096}).response
    assert sample(7) == sample(7) != sample(8)
    short = client.generate(model=MODEL, prompt="the dog", raw=True, options={"num_predict": 2, "temperature": 0})
    assert short.eval_count <= 2
    status, error = _status(lambda: client.chat(model=MODEL, messages=MESSAGES, options={"temperature": -1}))
    assert status == 400 and "options.temperature" in error


def test_logprobs(client: ollama.Client) -> None:
    answer = client.chat(model=MODEL, messages=MESSAGES, options=GREEDY, logprobs=True, top_logprobs=2)
    assert len(answer.logprobs) == answer.eval_count
    assert all(len(entry.top_logprobs) == 2 and entry.logprob <= 0 for entry in answer.logprobs)
    # Greedy: each token is the most likely one.
    assert all(entry.logprob == pytest.approx(entry.top_logprobs[0].logprob) for entry in answer.logprobs)
    streamed = list(client.chat(model=MODEL, messages=MESSAGES, options=GREEDY, logprobs=True, stream=True))
    assert [e.token for p in streamed for e in p.logprobs or []] == [e.token for e in answer.logprobs]


def test_format_json_and_a_schema(client: ollama.Client) -> None:
    for seed in (1, 2):
        answer = client.chat(model=MODEL, messages=[{"role": "user", "content": "a person"}], format=PERSON,
                             options={"temperature": 1.0, "seed": seed, "num_predict": 300})
        assert answer.done_reason == "stop"
        person = json.loads(answer.message.content)
        assert list(person) == ["name", "age", "pet"] and person["pet"] in ("cat", "dog")
    generated = client.generate(model=MODEL, prompt="a person", format=PERSON, raw=True,
                                options={"temperature": 1.0, "seed": 3, "num_predict": 300})
    assert generated.done_reason == "stop" and list(json.loads(generated.response)) == ["name", "age", "pet"]
    loose = client.chat(model=MODEL, messages=[{"role": "user", "content": "json"}], format="json",
                        options={"temperature": 1.0, "seed": 5, "num_predict": 20})
    assert loose.message.content.startswith("{")


ADD_TOOL = {"type": "function", "function": {
    "name": "add_two_numbers", "description": "Add two numbers",
    "parameters": {"type": "object", "required": ["a", "b"], "properties": {
        "a": {"type": "integer", "minimum": 0, "maximum": 99}, "b": {"type": "integer", "minimum": 0, "maximum": 99}}}}}


def add_two_numbers(a: int, b: int) -> int:
    """Add two numbers.

    Args:
      a: The first number
      b: The second number
    """
    return a + b


@pytest.fixture(scope="module")
def tool_client(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory):
    """A model that calls add_two_numbers (support/forced_tools.py), named as the shared server's."""
    call = hermes_call("add_two_numbers", {"a": 2, "b": 3})
    with forced_tool_server(tiny_bundle, tmp_path_factory.mktemp("ollama_tools"), call, MODEL) as running:
        yield ollama.Client(host=running.url, timeout=60)


def test_a_tool_call_has_its_arguments_as_an_object(tool_client: ollama.Client) -> None:
    """Ollama has no tool_choice: the model's call is checked, plain and streamed, and goes back."""
    client = tool_client
    question = [{"role": "user", "content": "what is 2 plus 3?"}]
    options = {"temperature": 1.0, "num_predict": 300}
    for seed in range(8):
        answer = client.chat(model=MODEL, messages=question, tools=[ADD_TOOL], options={**options, "seed": seed})
        if answer.message.tool_calls:
            break
    else:
        pytest.fail("no seed made a tool call")
    assert answer.done_reason == "stop" and not answer.message.content
    for call in answer.message.tool_calls:
        assert call.function.name == "add_two_numbers"
        assert all(isinstance(call.function.arguments[key], int) for key in ("a", "b"))
    streamed = list(client.chat(model=MODEL, messages=question, tools=[ADD_TOOL], stream=True,
                                options={**options, "seed": seed}))
    assert [c.function for p in streamed for c in p.message.tool_calls or []] == \
        [c.function for c in answer.message.tool_calls]
    assert streamed[-1].done and streamed[-1].done_reason == "stop"
    # The call and its result go back as Ollama's clients send them (arguments as an object, the result
    # naming its tool), with the tool given as a Python function this time.
    call = answer.message.tool_calls[0]
    history = [*question, {"role": "assistant", "content": "", "tool_calls": [
        {"function": {"name": call.function.name, "arguments": dict(call.function.arguments)}}]},
        {"role": "tool", "content": str(add_two_numbers(**call.function.arguments)), "tool_name": "add_two_numbers"}]
    after = client.chat(model=MODEL, messages=history, tools=[add_two_numbers], options={**options, "num_predict": 8})
    assert after.done and after.prompt_eval_count > answer.prompt_eval_count


def test_embed_and_the_older_embeddings(client: ollama.Client) -> None:
    vectors = client.embed(model=MODEL, input=["hello world", "the cat", "hello world"]).embeddings
    assert [len(v) for v in vectors] == [64, 64, 64]
    assert all(sum(x * x for x in v) == pytest.approx(1.0, abs=1e-4) for v in vectors)
    assert vectors[0] == pytest.approx(vectors[2]) and vectors[0] != pytest.approx(vectors[1])
    assert client.embed(model=MODEL, input="the cat").embeddings[0] == pytest.approx(vectors[1], abs=1e-6)
    short = client.embed(model=MODEL, input="the cat", dimensions=16).embeddings[0]
    assert len(short) == 16 and sum(x * x for x in short) == pytest.approx(1.0, abs=1e-4)
    legacy = client.embeddings(model=MODEL, prompt="the cat").embedding
    norm = math.sqrt(sum(x * x for x in legacy))
    assert [x / norm for x in legacy] == pytest.approx(vectors[1], abs=1e-5)


def test_errors_in_ollamas_shape(server: ServerProcess, client: ollama.Client) -> None:
    status, error = _status(lambda: client.chat(model="llama3", messages=MESSAGES))
    assert status == 404 and "not found" in error and f"{MODEL}:latest" in error
    assert _status(lambda: client.generate(model="other:latest", prompt="hi"))[0] == 404
    assert _status(lambda: client.show("llama3"))[0] == 404
    for call in (lambda: client.pull(MODEL), lambda: client.delete(MODEL), lambda: client.copy(MODEL, "b"),
                 lambda: client.push(MODEL)):
        status, error = _status(call)
        assert status == 403 and "one built-in model" in error
    assert _status(lambda: client.chat(model=MODEL, messages=[{"role": "user", "content": "hi",
                                                              "images": ["aGk="]}]))[0] == 400
    assert _status(lambda: client.chat(model=MODEL, messages=MESSAGES, think="loudly"))[0] == 400
    status, error = _status(lambda: client.chat(model=MODEL, messages=[{"role": "user", "content": "cat " * (N_CTX + 100)}]))
    assert status == 400 and "context" in error
    # The raw shape: {"error": "..."} and nothing else, for refusals of the route, of validation, and of
    # the middlewares.
    url = server.url + "api/chat"
    for response, code in ((httpx.post(url, json={"model": "x", "messages": MESSAGES}), 404),
                           (httpx.post(url, json={"model": MODEL, "messages": "hi"}), 400),
                           (httpx.post(url, content=b"{}", headers={"Content-Type": "text/plain"}), 415),
                           (httpx.post(url, json={"messages": MESSAGES}), 400)):
        assert response.status_code == code
        body = response.json()
        assert list(body) == ["error"] and isinstance(body["error"], str)
    assert httpx.post(server.base_url + "/chat/completions", json={"messages": "hi"}).json()["error"]["type"]


def test_a_request_without_messages_or_prompt_loads_the_model(client: ollama.Client) -> None:
    assert client.chat(model=MODEL, messages=[]).done_reason == "load"
    assert client.generate(model=MODEL, prompt="", keep_alive=0).done_reason == "unload"


def test_alias_and_embeddings_off(tiny_bundle: Path, tmp_path: Path) -> None:
    with running_server(tiny_bundle, "-c", "256", "-a", "mine", log_path=tmp_path / "server.log") as server:
        client = ollama.Client(host=server.url, timeout=60)
        assert [m.model for m in client.list().models] == ["mine:latest"]
        assert client.chat(model="mine", messages=MESSAGES, options=GREEDY).message.content
        assert _status(lambda: client.show(MODEL))[0] == 404
        status, error = _status(lambda: client.embed(model="mine", input="hi"))
        assert status == 400 and "--embedding" in error
        assert server.interrupt() == 0


@pytest.mark.parametrize("path, body", [
    ("/api/chat", {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}),
    ("/api/generate", {"model": "fake-model", "prompt": "hi", "raw": True}),
])
def test_a_stream_cut_by_shutdown_ends_with_an_error_line(path: str, body: dict) -> None:
    """In-process, an engine that never ends: the server's shutdown ends the NDJSON stream with Ollama's
    error line, never with a line saying done."""
    settings = Settings()
    app = app_for(settings, EngineHolder.loaded(settings, EndlessEngine()))
    client = TestClient(app, base_url="http://localhost")
    with client.stream("POST", path, json=body) as response:
        assert response.status_code == 200 and response.headers["content-type"] == "application/x-ndjson"
        lines = response.iter_lines()
        head = [next(lines) for _ in range(3)]
        cancel_generations(app)
        chunks = [json.loads(line) for line in [*head, *lines] if line]
    assert chunks[-1] == {"error": messages.SERVER_SHUTTING_DOWN}
    assert len(chunks) > 3 and not any(c.get("done") for c in chunks[:-1])


def test_no_bad_request_left_a_traceback_or_a_500(server: ServerProcess) -> None:
    """Runs last in this module: after every bad request above, no traceback and no 500."""
    assert "Traceback" not in server.log and "Exception in ASGI application" not in server.log
    metrics = httpx.get(server.url + "metrics").text
    assert 'status="500"' not in metrics and 'route="ollama_chat"' in metrics
