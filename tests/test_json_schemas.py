"""End to end: response_format json_schema with the JSON-Schema constructs clients send; each answer
of the real executable (official `openai` client) is valid JSON that the schema admits (checked with
`jsonschema`, formats included), and what a grammar cannot express is a 400 naming it."""

from __future__ import annotations

import datetime
import json
import re
import uuid
from pathlib import Path

import jsonschema
import openai
import pytest
from support.server_fixtures import running_server

pytestmark = pytest.mark.slow

SHORT = {"type": "string", "maxLength": 8}
SCHEMAS = {
    "prefixItems": {"type": "array", "prefixItems": [SHORT, {"type": "integer"}, {"type": "boolean"}]},
    "prefixItems-then-items": {"type": "array", "prefixItems": [{"const": "head"}], "items": {"type": "null"},
                               "minItems": 3, "maxItems": 4},
    "items-list-draft4": {"$schema": "http://json-schema.org/draft-04/schema#", "type": "array",
                          "items": [{"type": "integer"}, SHORT], "additionalItems": False},
    "anyOf": {"type": "object", "properties": {"v": {"anyOf": [{"type": "integer"}, {"type": "null"},
                                                               {"enum": ["x", "y"]}]}}, "required": ["v"]},
    "ref-defs": {"$defs": {"point": {"type": "object", "properties": {"x": {"type": "integer"},
                                                                      "y": {"type": "integer"}},
                                     "required": ["x", "y"]}},
                 "type": "object", "properties": {"a": {"$ref": "#/$defs/point"}, "b": {"$ref": "#/$defs/point"}},
                 "required": ["a", "b"]},
    "enum-const": {"type": "object", "properties": {"kind": {"enum": ["cat", "dog", 3, None]},
                                                    "version": {"const": 2}}, "required": ["kind", "version"]},
    "formats": {"type": "object", "properties": {name: {"type": "string", "format": name}
                                                 for name in ("date", "time", "date-time", "uuid", "email")},
                "required": ["date", "time", "date-time", "uuid", "email"]},
    "pattern": {"type": "object", "properties": {"code": {"type": "string", "pattern": "^[A-Z]{2}-\\d{3}$"},
                                                 "odd": {"type": "string", "pattern": "^a\"b\\\\c(x|yz)?$"},
                                                 "word": {"type": "string", "pattern": "^[^\\s\"]{2,5}$"}},
                "required": ["code", "odd", "word"]},
    "lengths-and-counts": {"type": "object", "properties": {
        "name": {"type": "string", "minLength": 3, "maxLength": 5},
        "tags": {"type": "array", "items": SHORT, "minItems": 2, "maxItems": 3}}, "required": ["name", "tags"]},
    "integer-bounds": {"type": "object", "properties": {
        "small": {"type": "integer", "minimum": -5, "maximum": 37},
        "positive": {"type": "integer", "exclusiveMinimum": 0, "maximum": 1000},
        "big": {"type": "integer", "minimum": 123456}}, "required": ["small", "positive", "big"]},
    "additionalProperties": {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"],
                             "additionalProperties": {"type": "boolean"}},
    "additionalProperties-false": {"type": "object", "properties": {"id": {"type": "integer"}},
                                   "additionalProperties": False},
}


@pytest.fixture(scope="module")
def client(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory):
    log = tmp_path_factory.mktemp("schemas") / "server.log"
    with running_server(tiny_bundle, "-c", "2048", log_path=log) as server:
        yield openai.OpenAI(base_url=server.base_url, api_key="-", max_retries=0, timeout=120)


def ask(client: openai.OpenAI, schema: dict, seed: int):
    return client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hello there"}], max_tokens=400, temperature=1.0, seed=seed,
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}})


def check_formats(value: dict) -> None:
    """What jsonschema's format checker leaves out without optional packages (date-time), and more."""
    datetime.date.fromisoformat(value["date"])
    assert re.fullmatch(r"\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", value["time"])
    datetime.datetime.fromisoformat(value["date-time"].replace("Z", "+00:00"))
    assert str(uuid.UUID(value["uuid"])) == value["uuid"]
    assert re.fullmatch(r"[^@\s]+@[^@\s]+\.[a-zA-Z]{2,}", value["email"])


@pytest.mark.parametrize("name", SCHEMAS)
def test_answers_match_the_schema(client: openai.OpenAI, name: str) -> None:
    schema = SCHEMAS[name]
    for seed in (1, 2):
        answer = ask(client, schema, seed)
        choice = answer.choices[0]
        assert choice.finish_reason == "stop", choice.message.content
        value = json.loads(choice.message.content)
        jsonschema.validate(value, schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
        if name == "formats":
            check_formats(value)


@pytest.mark.parametrize("schema, words", [
    ({"type": "string", "pattern": "^(a)\\1$"}, "'pattern'"),
    ({"type": "string", "pattern": "(?=a)a"}, "'pattern'"),
    ({"type": "string", "pattern": "\\bword"}, "'pattern'"),
    ({"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, "'uniqueItems'"),
    ({"type": "integer", "multipleOf": 3}, "'multipleOf'"),
    ({"type": "object", "minProperties": 2}, "'minProperties'"),
    ({"type": "integer", "minimum": 10, "maximum": 2}, "no integer lies between"),
    ({"type": "array", "prefixItems": [{"type": "integer"}], "minItems": 2}, "minItems 2"),
])
def test_what_a_grammar_cannot_express_is_a_400_naming_it(client: openai.OpenAI, schema: dict, words: str) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        ask(client, schema, 0)
    assert words in refused.value.body["message"]
    assert refused.value.body["param"] == "response_format.json_schema.schema"
