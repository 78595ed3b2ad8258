"""Hostile grammars and JSON schemas against the real executable: each is a 400 in OpenAI's error
shape (streamed or not), before llama.cpp's parser sees it; a few hundred generated ones leave the
server alive; a refused --grammar is one line and exit 2 in every mode, before the model loads."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.commands import one_error_line, run
from support.server_fixtures import ServerProcess, running_server
from test_grammar_check import AMBIGUOUS, GRAMMARS, SCHEMAS

pytestmark = pytest.mark.slow

MESSAGES = [{"role": "user", "content": "hello there"}]
NESTED = "root ::= " + "(" * 20_000 + '"a"' + ")" * 20_000

HOSTILE_GRAMMARS = [
    ('root ::= "a"{2,1}', "grammar: repetition {2,1} has its minimum above its maximum (line 1)"),
    (NESTED, "grammar: parentheses nested deeper than 64 (line 1)"),
    ("root ::= [z-a]", "grammar: the character range z-a is reversed (U+007A is above U+0061) (line 1)"),
    ("root ::= [\\U0010FFFF-\\x00]", "grammar: the character range \\U0010FFFF-\\x00 is reversed"),
    ('root ::= "\ud800"', "grammar: the grammar holds an unpaired surrogate ('\\ud800')"),
    (AMBIGUOUS, "grammar: rule 'root' is ambiguous enough to make llama.cpp follow more than 1024 readings"),
]
HOSTILE_SCHEMAS = [
    ({"type": "string", "minLength": 5, "maxLength": 2}, "maxLength is below minLength (2 < 5)"),
    ({"type": "object", "properties": {"\ud800": {"type": "string"}}, "required": ["\ud800"]},
     "unpaired surrogate ('\\ud800')"),
    ({"enum": ["a", "\udc00"]}, "unpaired surrogate ('\\udc00')"),
    ({"type": "array", "items": {"type": "string", "minLength": 10 ** 6}}, "minLength 1000000 is above the supported"),
]


@pytest.fixture(scope="module")
def server(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory):
    log = tmp_path_factory.mktemp("server") / "server.log"
    with running_server(tiny_bundle, "-c", "512", log_path=log) as running:
        yield running


def post(server: ServerProcess, route: str, body: dict) -> httpx.Response:
    # json.dumps escapes a lone surrogate as \ud800, as a client's JSON would carry it.
    return httpx.post(server.base_url + route, content=json.dumps(body).encode(),
                      headers={"content-type": "application/json"}, timeout=60)


def error_of(response: httpx.Response) -> dict:
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) >= {"message", "type", "param", "code"}
    assert body["error"]["type"] == "invalid_request_error"
    return body["error"]


def schema_format(schema: object) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("grammar, message", HOSTILE_GRAMMARS,
                         ids=[f"grammar-{i}" for i in range(len(HOSTILE_GRAMMARS))])
def test_hostile_grammars_are_400(server: ServerProcess, grammar: str, message: str, stream: bool) -> None:
    chat = error_of(post(server, "/chat/completions", {"messages": MESSAGES, "grammar": grammar, "stream": stream}))
    assert message in chat["message"] and chat["param"] == "grammar" and chat["code"] == "invalid_grammar"
    text = error_of(post(server, "/completions", {"prompt": "hi", "grammar": grammar, "stream": stream}))
    assert message in text["message"]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("schema, message", HOSTILE_SCHEMAS, ids=[f"schema-{i}" for i in range(len(HOSTILE_SCHEMAS))])
def test_hostile_schemas_are_400(server: ServerProcess, schema: dict, message: str, stream: bool) -> None:
    error = error_of(post(server, "/chat/completions", {"messages": MESSAGES, "stream": stream,
                                                         "response_format": schema_format(schema)}))
    assert message in error["message"] and error["param"] == "response_format.json_schema.schema"


def _answered(response: httpx.Response) -> None:
    """A fuzzed request is served (200) or refused in OpenAI's shape (400): never a 500 or a dead server."""
    if response.status_code != 200:
        error_of(response)


@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
@given(grammar=GRAMMARS, stream=st.booleans())
def test_fuzzed_grammars_are_answered(server: ServerProcess, grammar: str, stream: bool) -> None:
    _answered(post(server, "/chat/completions", {"messages": MESSAGES, "grammar": grammar, "max_tokens": 2,
                                                 "stream": stream}))


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(schema=SCHEMAS)
def test_fuzzed_schemas_are_answered(server: ServerProcess, schema: object) -> None:
    _answered(post(server, "/chat/completions", {"messages": MESSAGES, "max_tokens": 2,
                                                 "response_format": schema_format(schema)}))


def test_the_server_is_alive_and_clean_after_all_that(server: ServerProcess) -> None:
    """Runs after the hostile and fuzzed requests: a normal request is answered, a grammar still
    constrains, and no request left a traceback or a 500."""
    assert server.process.poll() is None
    assert httpx.get(server.url + "health", timeout=10).status_code == 200
    plain = post(server, "/chat/completions", {"messages": MESSAGES, "max_tokens": 3})
    assert plain.status_code == 200 and plain.json()["choices"][0]["message"]["role"] == "assistant"
    constrained = post(server, "/chat/completions", {"messages": MESSAGES, "max_tokens": 10,
                                                     "grammar": 'root ::= "yes" | "no"'})
    assert constrained.status_code == 200 and constrained.json()["choices"][0]["message"]["content"] in ("yes", "no")
    assert "Traceback" not in server.log and "Exception in ASGI application" not in server.log
    assert 'status="500"' not in httpx.get(server.url + "metrics", timeout=10).text


@pytest.mark.parametrize("mode", ["--cli", "--server", "--chat"])
def test_a_refused_grammar_flag_is_one_line_and_exit_2_in_every_mode(tiny_bundle: Path, tmp_path: Path,
                                                                   mode: str) -> None:
    extra = ["-p", "hi"] if mode == "--cli" else (["--nobrowser", "--port", "0"] if mode == "--server" else [])
    result = run([str(tiny_bundle), mode, "--grammar", 'root ::= "a"{2,1}', *extra], input="", timeout=60)
    line = one_error_line(result)
    assert result.returncode == 2 and result.stdout == ""
    assert line == "error: --grammar: repetition {2,1} has its minimum above its maximum (line 1)"
    grammar_file = tmp_path / "nested.gbnf"
    grammar_file.write_text(NESTED + "\n")
    result = run([str(tiny_bundle), mode, "--grammar-file", str(grammar_file), *extra], input="", timeout=60)
    assert one_error_line(result) == f"error: --grammar-file {grammar_file}: parentheses nested deeper than 64 (line 1)"
    assert result.returncode == 2 and result.stdout == ""
