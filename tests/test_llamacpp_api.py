"""llama.cpp's native HTTP API on the real executable, called with plain HTTP as llama-server's clients do
(its web UI, llama.vim, llama.vscode): /completion plain and streamed, token-id and mixed prompts,
n_probs, samplers, grammar and json_schema, /infill with FIM tokens and without, /apply-template,
/props, /slots, /embeddings per token and pooled, /rerank on a tiny reranker and refused elsewhere, errors
in llama-server's shape."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import httpx
import pytest
from llmpack.runtime import messages
from support.commands import build_bundle, one_error_line, run
from support.server_fixtures import ServerProcess, running_server
from support.tiny_model import (
    FIM_TOKENS,
    GEMMA_TEMPLATE,
    write_tiny_gguf,
    write_tiny_reranker,
)


@pytest.fixture(scope="module")
def fim_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fim")
    return build_bundle(write_tiny_gguf(folder / "fim.gguf", fim=True), folder / "fim.llmpack")


@pytest.fixture(scope="module")
def server(fim_bundle: Path, tmp_path_factory: pytest.TempPathFactory):
    """The FIM model with per-token embeddings (its pooling is none) and two sequences; -b 256 leaves
    /infill room for extra context (llama-server keeps n_ctx - n_batch - 2 * n_predict tokens for it)."""
    log = tmp_path_factory.mktemp("logs") / "fim-server.log"
    with running_server(fim_bundle, "--embedding", "-np", "2", "-c", "1024", "-b", "256", log_path=log) as process:
        yield process


@pytest.fixture(scope="module")
def plain_server(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory):
    """The tiny model without FIM tokens, embeddings mean-pooled (with 4 sequences and the embeddings' own,
    5: mean pooling's n_ubatch must then be a multiple of 5, or llama.cpp aborts)."""
    log = tmp_path_factory.mktemp("logs") / "plain-server.log"
    with running_server(tiny_bundle, "--embedding", "--pooling", "mean", log_path=log) as process:
        yield process


def post(server: ServerProcess, path: str, body: dict, status: int = 200) -> dict | list:
    response = httpx.post(server.url + path, json=body, timeout=60)
    assert response.status_code == status, response.text
    return response.json()


def llama_error(response: httpx.Response, status: int) -> dict:
    """llama-server's error shape: {"error": {"code": STATUS, "message", "type"}}."""
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"]
    assert body["error"]["code"] == status and isinstance(body["error"]["message"], str)
    assert body["error"]["type"]
    return body["error"]


def tokenize(server: ServerProcess, text: str, add_special: bool = True, parse_special: bool = True) -> list[int]:
    return post(server, "tokenize", {"content": text, "add_special": add_special, "parse_special": parse_special})["tokens"]


GREEDY = {"temperature": 0, "n_predict": 12}


def test_completion_matches_openai_completions_and_reports_llama_fields(server: ServerProcess) -> None:
    result = post(server, "completion", {"prompt": "the cat and", **GREEDY, "return_tokens": True})
    openai_text = post(server, "v1/completions", {"prompt": "the cat and", "max_tokens": 12, "temperature": 0})
    assert result["content"] == openai_text["choices"][0]["text"]
    assert result["stop"] is True
    assert result["tokens_evaluated"] == len(tokenize(server, "the cat and"))
    assert len(result["tokens"]) == result["tokens_predicted"] == result["timings"]["predicted_n"]
    assert post(server, "detokenize", {"tokens": result["tokens"]})["content"] == result["content"]
    assert result["stop_type"] == ("limit" if result["tokens_predicted"] == 12 else "eos")
    timings = result["timings"]
    assert timings["prompt_n"] + timings["cache_n"] == result["tokens_evaluated"]
    assert set(timings) >= {"prompt_ms", "prompt_per_token_ms", "prompt_per_second", "predicted_ms",
                            "predicted_per_token_ms", "predicted_per_second"}
    assert result["generation_settings"]["n_predict"] == 12
    assert "completion_probabilities" not in result  # only with n_probs
    # /completions is llama-server's alias of /completion (not OpenAI's, which is /v1/completions).
    assert post(server, "completions", {"prompt": "the cat and", **GREEDY})["content"] == result["content"]


def test_streamed_completion_is_data_events_without_done(server: ServerProcess) -> None:
    whole = post(server, "completion", {"prompt": "hello world", **GREEDY})
    with httpx.stream("POST", server.url + "completion", json={"prompt": "hello world", **GREEDY, "stream": True},
                      timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert "data: [DONE]" not in lines  # llama-server's streams end with the stop event
    events = [json.loads(line[len("data: "):]) for line in lines]
    assert [e["stop"] for e in events] == [False] * (len(events) - 1) + [True]
    assert "".join(e["content"] for e in events) == whole["content"]
    assert sum(len(e["tokens"]) for e in events[:-1]) == whole["tokens_predicted"]
    assert events[-1]["timings"]["predicted_n"] == whole["tokens_predicted"]
    assert events[-1]["stop_type"] == whole["stop_type"]


def test_token_id_and_mixed_prompts_read_as_the_text(server: ServerProcess) -> None:
    text = post(server, "completion", {"prompt": "the dog is", **GREEDY})
    ids = tokenize(server, "the dog is")
    by_ids = post(server, "completion", {"prompt": ids, **GREEDY})
    assert by_ids["content"] == text["content"] and by_ids["tokens_evaluated"] == len(ids)
    # Mixed: token ids and text; only a first string gets BOS, so the BOS id comes first here.
    assert ids[0] == tokenize(server, "")[0]
    mixed = post(server, "completion", {"prompt": [ids[0], "the dog is"], **GREEDY})
    assert mixed["content"] == text["content"] and mixed["tokens_evaluated"] == len(ids)
    assert post(server, "completion", {"prompt": [ids], **GREEDY})["content"] == text["content"]
    # An empty text is BOS alone, as in llama-server (this vocabulary adds BOS).
    assert post(server, "completion", {"prompt": "", **GREEDY})["tokens_evaluated"] == 1


def test_n_probs_gives_completion_probabilities(server: ServerProcess) -> None:
    result = post(server, "completion", {"prompt": "four score", "temperature": 0, "n_predict": 4, "n_probs": 3})
    probabilities = result["completion_probabilities"]
    assert len(probabilities) == result["tokens_predicted"]
    for entry in probabilities:
        assert set(entry) >= {"id", "token", "bytes", "logprob", "top_logprobs"}
        assert entry["logprob"] <= 0
        top = entry["top_logprobs"]
        assert len(top) == 3 and [t["logprob"] for t in top] == sorted((t["logprob"] for t in top), reverse=True)
        assert top[0]["id"] == entry["id"]  # greedy picks the likeliest


def test_stop_word_is_reported(server: ServerProcess) -> None:
    full = post(server, "completion", {"prompt": "years ago", "temperature": 0, "n_predict": 16})["content"]
    stop = full[4:6]
    assert len(stop) == 2, full
    result = post(server, "completion", {"prompt": "years ago", "temperature": 0, "n_predict": 16, "stop": [stop]})
    assert result["content"] == full[:full.index(stop)]
    assert (result["stop_type"], result["stopping_word"]) == ("word", stop)


def test_logit_bias_by_id_or_text(server: ServerProcess) -> None:
    first = post(server, "completion", {"prompt": "the", "temperature": 0, "n_predict": 1, "return_tokens": True})
    token = first["tokens"][0]
    for bias in ([[token, False]], {str(token): False}):
        banned = post(server, "completion", {"prompt": "the", "temperature": 0, "n_predict": 1, "return_tokens": True,
                                             "logit_bias": bias})
        assert banned["tokens"][0] != token
    # As text: each of its tokens gets the bias (pushed to the top here, so one of them comes first).
    cat = tokenize(server, "cat", add_special=False, parse_special=False)
    forced = post(server, "completion", {"prompt": "the", "temperature": 0, "n_predict": 1, "return_tokens": True,
                                         "logit_bias": [["cat", 100]]})
    assert token not in cat and forced["tokens"][0] in cat


def test_samplers_we_do_not_have_are_refused_when_switched_on(server: ServerProcess) -> None:
    for name, value in (("mirostat", 2), ("dry_multiplier", 0.8), ("xtc_probability", 0.5), ("typical_p", 0.9)):
        message = llama_error(httpx.post(server.url + "completion", json={"prompt": "a", name: value}, timeout=30),
                              400)["message"]
        assert name in message
    # At the values that switch them off, they are accepted.
    post(server, "completion", {"prompt": "a", "n_predict": 1, "mirostat": 0, "typical_p": 1.0})


def test_samplers_left_out_are_off_and_a_foreign_order_is_refused(server: ServerProcess) -> None:
    result = post(server, "completion", {"prompt": "a", "n_predict": 2, "seed": 3,
                                         "samplers": ["top_k", "temperature"]})
    settings = result["generation_settings"]
    assert (settings["top_p"], settings["min_p"]) == (1.0, 0.0)
    assert settings["samplers"] == ["penalties", "top_k", "temperature"]
    message = llama_error(httpx.post(server.url + "completion", json={"prompt": "a", "samplers": ["temperature", "top_k"]}),
                          400)["message"]
    assert "order" in message


def test_grammar_and_json_schema_constrain_the_output(server: ServerProcess) -> None:
    result = post(server, "completion", {"prompt": "yes or no?", "grammar": 'root ::= "yes" | "no"',
                                         "n_predict": 20, "temperature": 1.0, "seed": 1})
    assert result["content"] in ("yes", "no") and result["stop_type"] == "eos"
    schema = {"type": "object", "properties": {"pet": {"enum": ["cat", "dog"]}}, "required": ["pet"]}
    for seed in (1, 2):
        result = post(server, "completion", {"prompt": "a pet", "json_schema": schema, "n_predict": 200,
                                             "temperature": 1.0, "seed": seed})
        assert json.loads(result["content"])["pet"] in ("cat", "dog")


def test_infill_builds_the_fim_prompt(server: ServerProcess) -> None:
    body = {"input_prefix": "the cat", "input_suffix": "the dog", "temperature": 0, "n_predict": 6}
    result = post(server, "infill", body)
    pre, suf, mid = FIM_TOKENS
    n_prefix = len(tokenize(server, "the cat", add_special=False, parse_special=False))
    n_suffix = len(tokenize(server, "the dog", add_special=False, parse_special=False))
    assert result["tokens_evaluated"] == 1 + 1 + n_prefix + 1 + n_suffix + 1  # BOS, FIM pre / suf / mid
    assert result["prompt"].startswith(f"<s>{pre}") and result["prompt"].endswith(mid)
    assert result["prompt"].index(pre) < result["prompt"].index(suf)
    # Extra context goes before the FIM prefix (this vocabulary has no FIM_SEP: llama-server's snippet marker).
    extra = post(server, "infill", {**body, "input_extra": [{"filename": "a.py", "text": "hello world"}]})
    assert extra["prompt"].index("--- snippet ---") < extra["prompt"].index("hello world") < extra["prompt"].index(pre)


def test_infill_as_llama_vim_sends_it(server: ServerProcess) -> None:
    """llama.vim's request (its samplers, time limits and response_fields) and the fields it reads."""
    body = {"input_prefix": "the cat\n", "input_suffix": "\nthe dog", "input_extra": [], "prompt": "    ",
            "n_predict": 8, "n_indent": 4, "top_k": 40, "top_p": 0.99, "stream": False,
            "samplers": ["top_k", "top_p", "infill"], "cache_prompt": True, "t_max_prompt_ms": 500,
            "t_max_predict_ms": 1000, "response_fields": ["content", "timings/prompt_n", "timings/predicted_ms",
                                                          "truncated", "tokens_cached"]}
    result = post(server, "infill", body)
    assert set(result) == {"content", "timings/prompt_n", "timings/predicted_ms", "truncated", "tokens_cached"}
    assert isinstance(result["content"], str) and result["timings/prompt_n"] > 0


def test_infill_without_fim_tokens_is_a_400(plain_server: ServerProcess) -> None:
    error = llama_error(httpx.post(plain_server.url + "infill", json={"input_prefix": "a", "input_suffix": "b"}), 400)
    assert error["message"] == messages.LLAMA_NO_FIM.removeprefix("error: ")


def test_tokenize_with_pieces_gives_bytes_for_partial_characters(server: ServerProcess) -> None:
    pieces = post(server, "tokenize", {"content": "cat \u00e9", "with_pieces": True})["tokens"]
    assert [p["id"] for p in pieces] == tokenize(server, "cat \u00e9", add_special=False)
    # This vocabulary spells é with two byte tokens: neither is UTF-8 alone, so each piece is its byte.
    assert [p["piece"] for p in pieces][-2:] == [[0xC3], [0xA9]]
    assert all(isinstance(p["piece"], str) for p in pieces[:-2])


def test_apply_template_renders_the_models_template(server: ServerProcess) -> None:
    result = post(server, "apply-template", {"messages": [{"role": "user", "content": "hi"}]})
    # As llama-server renders it: the BOS the tokenizer adds is not in the text.
    assert result == {"prompt": "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n"}


def test_props_and_slots(server: ServerProcess, fim_bundle: Path) -> None:
    props = httpx.get(server.url + "props", timeout=10).json()
    n_ctx = httpx.get(server.base_url + "/models", timeout=10).json()["data"][0]["meta"]["n_ctx"]
    assert props["total_slots"] == 2
    assert props["n_ctx"] == props["default_generation_settings"]["n_ctx"] == n_ctx
    assert props["chat_template"] == GEMMA_TEMPLATE
    assert props["modalities"] == {"vision": False, "audio": False}
    assert props["build_info"].startswith("llmpack ")
    assert props["model_path"] == str(fim_bundle)  # the weights are inside the executable
    # The name clients send is the executable's (fim.llmpack); the GGUF's own name stays here.
    assert (props["model_alias"], props["general_name"]) == ("fim", "tiny-test-model")
    assert props["default_generation_settings"]["params"]["temperature"] == 0.8  # the server's default
    slots = httpx.get(server.url + "slots", timeout=10).json()
    assert [(s["id"], s["n_ctx"], s["is_processing"]) for s in slots] == [(0, n_ctx, False), (1, n_ctx, False)]


def test_embeddings_per_token_without_pooling(server: ServerProcess) -> None:
    result = post(server, "embeddings", {"content": "hello world"})
    assert [r["index"] for r in result] == [0]
    rows = result[0]["embedding"]
    assert len(rows) == len(tokenize(server, "hello world", parse_special=False))
    assert all(len(row) == 64 for row in rows)  # the tiny model's n_embd
    both = post(server, "embeddings", {"content": ["the cat", "the dog"]})
    assert [r["index"] for r in both] == [0, 1]


def test_embeddings_pooled_are_one_normalized_vector(plain_server: ServerProcess) -> None:
    result = post(plain_server, "embeddings", {"content": "hello world"})
    assert len(result) == 1 and len(result[0]["embedding"]) == 1
    vector = result[0]["embedding"][0]
    assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0, rel_tol=1e-4)
    openai_vector = post(plain_server, "v1/embeddings", {"input": "hello world"})["data"][0]["embedding"]
    assert all(math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6) for a, b in zip(vector, openai_vector))


def test_rerank_without_reranking_is_a_400(server: ServerProcess) -> None:
    for path in ("rerank", "v1/rerank"):
        error = llama_error(httpx.post(server.url + path, json={"query": "a", "documents": ["b", "c"]}), 400)
        assert error["message"] == messages.LLAMA_NO_RERANKING.removeprefix("error: ")


def test_rerank_on_a_reranker_model(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A tiny BERT cross-encoder with a classification head (rank pooling): /rerank scores each
    (query, document) pair on its own and sorts them, llama-server's shape."""
    folder = tmp_path_factory.mktemp("reranker")
    bundle = build_bundle(write_tiny_reranker(folder / "reranker.gguf"), folder / "reranker.llmpack")
    documents = ["paris", "the cat sat on the mat", "hello world"]
    with running_server(bundle, "--reranking", log_path=folder / "server.log") as reranker:
        result = post(reranker, "rerank", {"query": "capital of france", "documents": documents})
        alone = [post(reranker, "v1/rerank", {"query": "capital of france", "documents": [d]}) for d in documents]
        top = post(reranker, "reranking", {"query": "capital of france", "documents": documents, "top_n": 2})
        tei = post(reranker, "rerank", {"query": "capital of france", "texts": documents, "top_n": 2,
                                        "return_text": True})  # Hugging Face TEI's shape
        both = httpx.post(reranker.url + "rerank", json={"query": "q", "texts": documents, "documents": documents},
                          timeout=10)
    scores = [r["relevance_score"] for r in result["results"]]
    assert sorted(r["index"] for r in result["results"]) == [0, 1, 2]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) == 3
    assert {r["index"]: r["relevance_score"] for r in result["results"]} == pytest.approx(
        {i: a["results"][0]["relevance_score"] for i, a in enumerate(alone)})
    assert top["results"] == result["results"][:2]
    assert tei == [{"index": r["index"], "score": r["relevance_score"], "text": documents[r["index"]]}
                   for r in top["results"]]
    assert llama_error(both, 400)["message"]
    assert result["usage"]["prompt_tokens"] == sum(a["usage"]["prompt_tokens"] for a in alone) > 0
    assert result["object"] == "list" and result["model"] == "reranker"  # reranker.llmpack


def test_reranking_needs_a_reranker_model(fim_bundle: Path) -> None:
    line = one_error_line(run([str(fim_bundle), "--cli", "-p", "hi", "-n", "1", "--reranking", "--log-disable"]))
    assert line.endswith(messages.RERANK_NEEDS_RERANKER.removeprefix("error: "))


@pytest.mark.parametrize("body, words", [
    (b"{not json", "not valid JSON"),
    (b'{"prompt": "a", "n_predict": "many"}', "n_predict"),
    (b'{"prompt": [[1, [2]]]}', "token ids mixed with strings"),
    (b'{"prompt": [999999]}', "out of range"),
    (b'{"prompt": []}', "empty"),
    (b'{"prompt": "a", "samplers": ["mirostat_v9"]}', "unknown sampler"),
    (b'{"prompt": "a", "grammar": "root ::= \\"a\\"", "ignore_eos": true}', "ignore_eos"),
    (b'{"prompt": "a", "grammar": "root ::= \\"a\\"", "json_schema": {}}', "json_schema"),
    (b'{"prompt": "a", "grammar": "root ::= nothing"}', "grammar"),
    (b'{"prompt": "a", "post_sampling_probs": true, "n_probs": 2}', "post_sampling_probs"),
])
def test_bad_requests_are_400_in_llama_servers_shape(server: ServerProcess, body: bytes, words: str) -> None:
    response = httpx.post(server.url + "completion", content=body, headers={"Content-Type": "application/json"},
                          timeout=30)
    assert words in llama_error(response, 400)["message"]


def test_refusals_before_the_route_have_llama_servers_shape_too(server: ServerProcess) -> None:
    llama_error(httpx.get(server.url + "completion", timeout=10), 405)
    not_json = httpx.post(server.url + "completion", content=b'{"prompt": "a"}', headers={"Content-Type": "text/plain"},
                          timeout=10)
    assert "Content-Type" in llama_error(not_json, 415)["message"]


def test_context_overflow_is_a_400_with_its_sizes(server: ServerProcess) -> None:
    error = llama_error(httpx.post(server.url + "completion", json={"prompt": "the cat " * 400}, timeout=30), 400)
    assert error["type"] == "exceed_context_size_error"
    assert error["n_prompt_tokens"] > error["n_ctx"]
    assert "Traceback" not in server.log


def test_slots_report_the_sequences_generating_now() -> None:
    """In-process with the fake engine: a sequence the engine says is generating is is_processing, and
    ?fail_on_no_slot=1 is a 503 once every one is."""
    from test_server_unit import FakeEngine, make_client

    engine = FakeEngine()
    engine.config = dataclasses.replace(engine.config, n_seq_max=2)
    client = make_client(engine)
    engine.sequences_in_use = frozenset({1})
    slots = client.get("/slots").json()
    assert [s["is_processing"] for s in slots] == [False, True]
    assert ["params" in s for s in slots] == [False, True]  # as llama-server: params once a slot has a task
    assert client.get("/slots?fail_on_no_slot=1").status_code == 200
    engine.sequences_in_use = frozenset({0, 1})
    llama_error(client.get("/slots?fail_on_no_slot=1"), 503)


def test_a_stream_that_fails_midway_ends_with_an_error_event() -> None:
    from test_server_unit import FakeEngine, make_client

    client = make_client(FakeEngine(fail_after=3))
    events = [json.loads(line[len("data: "):]) for line in
              client.post("/completion", json={"prompt": "hi", "stream": True}).text.splitlines() if line]
    assert "".join(e.get("content", "") for e in events[:-1]) == "hel"
    assert events[-1]["error"]["code"] == 500 and "llama_decode" in events[-1]["error"]["message"]


def test_chat_extensions_json_schema_verbose_and_input_tokens(server: ServerProcess) -> None:
    """llama-server's chat extensions: a top-level `json_schema` constrains the answer as response_format
    does, `verbose` adds `__verbose` with the rendered prompt, and /chat/completions/input_tokens counts
    the prompt without generating."""
    messages = [{"role": "user", "content": "hello there"}]
    constrained = post(server, "v1/chat/completions", {"messages": messages, "max_tokens": 8, "temperature": 0,
                                                        "json_schema": {"const": "42"}})
    assert constrained["choices"][0]["message"]["content"] == '"42"'
    both = httpx.post(server.url + "v1/chat/completions", timeout=60, json={
        "messages": messages, "json_schema": {"const": 1}, "grammar": 'root ::= "a"'})
    assert both.status_code == 400 and both.json()["error"]["param"] == "json_schema"
    verbose = post(server, "v1/chat/completions", {"messages": messages, "max_tokens": 1, "verbose": True})
    assert verbose["__verbose"]["prompt"] == "<start_of_turn>user\nhello there<end_of_turn>\n<start_of_turn>model\n"
    quiet = post(server, "v1/chat/completions", {"messages": messages, "max_tokens": 1})
    assert "__verbose" not in quiet
    counted = post(server, "chat/completions/input_tokens", {"messages": messages})
    assert counted == {"input_tokens": verbose["usage"]["prompt_tokens"]}
    assert post(server, "v1/chat/completions/input_tokens", {"messages": messages}) == counted
    refused = httpx.post(server.url + "chat/completions/input_tokens", json={"messages": []}, timeout=10)
    assert refused.status_code == 400


def _ipv6_loopback() -> bool:
    import socket

    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_no_ui_no_slots_and_several_hosts(tiny_bundle: Path, tmp_path: Path) -> None:
    """llama-server's switches: --no-ui serves the API without the page (404 at /), --no-slots turns
    /slots off with llama-server's 501, and --host takes several addresses (each listens, on one port)."""
    hosts = "127.0.0.1,::1" if _ipv6_loopback() else "127.0.0.1"
    with running_server(tiny_bundle, "--no-ui", "--no-slots", "--host", hosts, log_path=tmp_path / "server.log") as bare:
        page = httpx.get(bare.url, timeout=10)
        assert page.status_code == 404 and page.json()["error"]["message"] == messages.SERVER_NO_UI
        error = llama_error(httpx.get(bare.url + "slots", timeout=10), 501)
        assert error["message"] == messages.LLAMA_SLOTS_OFF
        assert httpx.get(bare.url + "health", timeout=10).status_code == 200
        if "::1" in hosts:
            port = bare.url.rstrip("/").rsplit(":", 1)[1]
            assert httpx.get(f"http://[::1]:{port}/health", timeout=10).status_code == 200
            assert httpx.post(f"http://[::1]:{port}/tokenize", json={"content": "hi"}, timeout=10).status_code == 200


def test_vertex_ai_prediction_mode(tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """AIP_MODE=PREDICTION (Vertex AI's custom containers, as llama-server serves them): AIP_HTTP_PORT
    overrides --port, AIP_HEALTH_ROUTE answers as /health, and POST /predict runs each instance through
    the route its @requestFormat names (camelCase, or the path), with the API key checked as usual."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("AIP_MODE", "PREDICTION")
    monkeypatch.setenv("AIP_HTTP_PORT", str(port))
    monkeypatch.setenv("AIP_HEALTH_ROUTE", "/vertex-health")
    with running_server(tiny_bundle, "--api-key", "k", log_path=tmp_path / "server.log") as vertex:
        assert vertex.url == f"http://127.0.0.1:{port}/"
        assert httpx.get(vertex.url + "vertex-health", timeout=10).status_code == 200
        chat = {"@requestFormat": "chatCompletions", "max_tokens": 2, "stream": True,
                "messages": [{"role": "user", "content": "hi"}]}
        tokens = {"@requestFormat": "/tokenize", "content": "hello"}
        answer = httpx.post(vertex.url + "predict", headers={"Authorization": "Bearer k"}, timeout=60,
                            json={"instances": [chat, tokens, {"@requestFormat": "nowhere"}, 3]})
        assert answer.status_code == 200, answer.text
        first, second, unknown, not_object = answer.json()["predictions"]
        assert first["object"] == "chat.completion" and first["choices"][0]["message"]["role"] == "assistant"
        assert second["tokens"] and "error" in unknown and "error" in not_object
        refused = httpx.post(vertex.url + "predict", json={"instances": [tokens]}, timeout=10)
        assert refused.status_code == 401  # the key guards /predict as every API route
        assert httpx.post(vertex.url + "predict", headers={"Authorization": "Bearer k"}, json={"x": 1},
                          timeout=10).status_code == 400


def test_generation_settings_list_the_logit_biases_and_what_ignore_eos_bans(server: ServerProcess) -> None:
    """As llama-server: `generation_settings.logit_bias` lists the request's biases, and with
    `ignore_eos` each end-of-generation token with a null (-inf) bias."""
    banned = post(server, "completion", {"prompt": "the cat", "n_predict": 2, "ignore_eos": True,
                                         "logit_bias": [[5, -2.5]]})["generation_settings"]["logit_bias"]
    assert banned[0] == {"token": 5, "bias": -2.5}
    assert {"token": 2, "bias": None} in banned[1:] and all(b["bias"] is None for b in banned[1:])
    plain = post(server, "completion", {"prompt": "the cat", "n_predict": 2})["generation_settings"]
    assert plain["logit_bias"] == [] and plain["ignore_eos"] is False


def test_several_prompts_are_answered_as_a_list(server: ServerProcess) -> None:
    """llama-server's shapes: a list of prompts (text, token ids, {"prompt_string"}) is answered as a list in
    their order, each as that prompt alone; several prompts cannot stream."""
    ids = tokenize(server, "the cat and")
    one = post(server, "completion", {"prompt": "the cat and", **GREEDY})
    several = post(server, "completion", {"prompt": [ids, "the cat and", {"prompt_string": "the cat and"}], **GREEDY})
    assert [(r["index"], r["content"]) for r in several] == [(i, one["content"]) for i in range(3)]
    assert post(server, "completion", {"prompt": {"prompt_string": "the cat and"}, **GREEDY})["content"] == one["content"]
    streamed = httpx.post(server.url + "completion", json={"prompt": ["a", "b"], "stream": True}, timeout=10)
    assert llama_error(streamed, 400)["message"]
    images = httpx.post(server.url + "completion", timeout=10,
                        json={"prompt": {"prompt_string": "hi", "multimodal_data": ["AAAA"]}})
    assert llama_error(images, 400)["message"]
