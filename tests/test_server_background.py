"""In-process with the real engine on the tiny GGUF: `start_background_server` (what the default mode runs
beside the terminal chat), and the JSON-schema grammars checked by llama.cpp itself."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import httpx
import pytest
from llmpack.runtime import messages
from llmpack.runtime.engine.engine import Engine
from llmpack.runtime.engine.native import route_native_logs
from llmpack.runtime.engine.types import (
    EngineConfig,
    GenerationRequest,
    ModelSource,
    SamplingParams,
)
from llmpack.runtime.errors import UserError
from llmpack.runtime.flags.settings import Settings
from llmpack.runtime.grammar.json_schema import (
    SchemaUnsupported,
    json_object_grammar,
    json_schema_grammar,
    literal,
)
from llmpack.runtime.plan import resolve
from llmpack.runtime.server.mode import start_background_server


@pytest.fixture(scope="module")
def engine(tiny_gguf: Path):
    route_native_logs(4)
    engine = Engine(ModelSource(str(tiny_gguf)), EngineConfig(n_ctx=512, n_threads=1))
    yield engine
    engine.close()


def test_background_server_serves_the_loaded_engine_beside_a_foreground_user(engine: Engine) -> None:
    server = start_background_server(resolve(Settings(host="127.0.0.1", port=0), "default"), engine)
    try:
        assert server.url.startswith("http://127.0.0.1:") and server.url.endswith("/")
        assert httpx.get(server.url + "health").json() == {"status": "ok"}
        results: dict[str, object] = {}

        def foreground() -> None:  # the terminal chat, generating on the same engine meanwhile
            tokens = tuple(engine.tokenize("hello", True, True))
            results["chat"] = list(engine.generate(GenerationRequest(tokens, 30, SamplingParams(temperature=0))))

        thread = threading.Thread(target=foreground)
        thread.start()
        answer = httpx.post(server.url + "v1/chat/completions", timeout=60,
                            json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 30}).json()
        thread.join(60)
        assert answer["usage"]["completion_tokens"] > 0 and answer["choices"][0]["finish_reason"]
        assert results["chat"][-1].finish_reason in ("stop", "length")
    finally:
        server.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + "health", timeout=2)
    # The engine outlives the server: the chat goes on after it stops.
    tokens = tuple(engine.tokenize("hello", True, True))
    assert list(engine.generate(GenerationRequest(tokens, 3, SamplingParams(temperature=0))))[-1].finish_reason


def test_background_server_on_a_busy_port_is_a_user_error(engine: Engine) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UserError) as raised:
            start_background_server(resolve(Settings(host="127.0.0.1", port=port), "default"), engine)
    assert str(raised.value).startswith(messages.SERVER_CANNOT_LISTEN.split("{")[0] + f"127.0.0.1:{port}: ")


# -- JSON schema grammars ----------------------------------------------------------------------

def _generate(engine: Engine, grammar: str, seed: int, max_tokens: int = 400) -> tuple[str, str]:
    tokens = tuple(engine.tokenize("<start_of_turn>user\njson<end_of_turn>\n<start_of_turn>model\n", True, True))
    pieces = list(engine.generate(GenerationRequest(tokens, max_tokens, SamplingParams(temperature=1.0, seed=seed,
                                                                                       grammar=grammar))))
    return "".join(p.text for p in pieces), pieces[-1].finish_reason


PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 5},
        "age": {"type": ["integer", "null"]},
        "kind": {"enum": ["cat", "dog", 3, None]},
        "tags": {"type": "array", "items": {"type": "boolean"}, "minItems": 1, "maxItems": 3},
        "home": {"$ref": "#/$defs/place"},
        "note": {"const": "fixed \"quoted\"\n"},
        "nick": {"type": "string", "maxLength": 3},
    },
    "required": ["name", "age", "kind", "tags", "home", "note"],
    "$defs": {"place": {"type": "object", "properties": {"x": {"type": "number"}, "y": {"type": "boolean"}},
                        "required": ["x"]}},
}


@pytest.mark.parametrize("seed", range(4))
def test_schema_grammar_admits_only_matching_documents(engine: Engine, seed: int) -> None:
    text, finish = _generate(engine, json_schema_grammar(PERSON), seed)
    assert finish == "stop", text
    doc = json.loads(text)
    assert [k for k in doc if k != "nick"] == ["name", "age", "kind", "tags", "home", "note"]
    assert isinstance(doc["name"], str) and (doc["age"] is None or isinstance(doc["age"], int))
    assert doc["kind"] in ("cat", "dog", 3, None)
    assert 1 <= len(doc["tags"]) <= 3 and all(isinstance(t, bool) for t in doc["tags"])
    assert set(doc["home"]) <= {"x", "y"} and "x" in doc["home"]
    assert isinstance(doc["home"]["x"], (int, float))
    assert doc["note"] == 'fixed "quoted"\n'


@pytest.mark.parametrize("seed", range(3))
def test_only_optional_properties_may_all_be_left_out(engine: Engine, seed: int) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "boolean"}, "b": {"type": "null"}, "c": {"const": 1}}}
    text, finish = _generate(engine, json_schema_grammar(schema), seed)
    assert finish == "stop"
    doc = json.loads(text)
    assert set(doc) <= {"a", "b", "c"} and list(doc) == sorted(doc)  # declared order


def test_recursive_schema_and_arrays(engine: Engine) -> None:
    schema = {"$ref": "#/$defs/node", "$defs": {"node": {
        "type": "object", "properties": {"v": {"type": "integer"},
                                         "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 1}},
        "required": ["v", "kids"]}}}
    grammar = json_schema_grammar(schema)
    text, finish = _generate(engine, grammar, 1, max_tokens=500)
    if finish == "stop":
        node = json.loads(text)
        while node["kids"]:
            node = node["kids"][0]
        assert isinstance(node["v"], int)
    else:  # a deep recursion may run out of tokens, but never out of the grammar
        assert text.startswith('{')


def test_json_object_grammar_is_accepted_by_llama_cpp(engine: Engine) -> None:
    text, _ = _generate(engine, json_object_grammar(), 0, max_tokens=30)
    assert text.startswith("{")


@pytest.mark.parametrize("schema, words", [
    ({"type": "string", "pattern": "(a)\\1"}, "'pattern' is not supported"),
    ({"not": {"type": "string"}}, "'not' is not supported"),
    ({"$ref": "#/$defs/missing"}, "points nowhere"),
    ({"$ref": "http://example.com/s.json"}, "only local $refs"),
    ({"type": "object", "properties": {"a": False}}, "admits nothing"),
    ({"type": "object", "properties": {}, "required": ["a"]}, "required property 'a'"),
    ({"type": "array", "minItems": 3, "maxItems": 1}, "maxItems is below minItems"),
    ({"type": "date"}, "unknown type"),
    ({"allOf": [{"type": "string"}, {"maxLength": 3}]}, "allOf"),
])
def test_unsupported_schemas_are_refused_with_a_reason(schema: dict, words: str) -> None:
    with pytest.raises(SchemaUnsupported, match=None) as raised:
        json_schema_grammar(schema)
    assert words in str(raised.value)


def test_literals_escape_what_gbnf_needs() -> None:
    assert literal('a"b\\c\n\t\x01é') == '"a\\"b\\\\c\\n\\t\\x01é"'


def test_penalties_reduce_repetition(engine: Engine) -> None:
    """presence/frequency/repeat penalties reach llama.cpp's penalties sampler (its signature there
    takes the vocabulary size first: a wrong call raised in the decoding thread)."""
    tokens = tuple(engine.tokenize("the cat", True, False))
    endless = "root ::= [a-z ] root"  # letters only, no end: 60 tokens must repeat some

    def distinct(**penalties: float) -> int:
        request = GenerationRequest(tokens, 60, SamplingParams(temperature=0, grammar=endless, **penalties))
        ids = [t for piece in engine.generate(request) for t in piece.token_ids]
        assert len(ids) == 60
        return len(set(ids))

    plain = distinct()
    assert distinct(presence_penalty=2.0) > plain
    assert distinct(frequency_penalty=2.0) > plain
    assert distinct(repeat_penalty=1.5) > plain
