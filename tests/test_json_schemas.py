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


# -- the converters on their own: what the grammar admits, checked against Python's own reading ----

def gbnf_to_regex(expression: str) -> str:
    """The GBNF expressions the pattern and integer converters write ("..." literals, classes, groups,
    | and quantifiers, no rule references) as a Python regular expression."""
    out, i = [], 0
    while i < len(expression):
        ch = expression[i]
        if ch == '"':
            j, text = i + 1, []
            while expression[j] != '"':
                if expression[j] == "\\":
                    j += 1
                    text.append({"n": "\n", "t": "\t", "r": "\r"}.get(expression[j], expression[j]))
                else:
                    text.append(expression[j])
                j += 1
            out.append(re.escape("".join(text)))
            i = j + 1
        elif ch == "[":
            j = expression.index("]", i + 1)
            while expression[j - 1] == "\\":
                j = expression.index("]", j + 1)
            out.append(expression[i:j + 1])
            i = j + 1
        elif ch != " ":
            out.append(ch)
            i += 1
        else:
            i += 1
    return "".join(out)


PATTERNS = ["^[A-Z]{2}-\\d{3}$", "a\"b\\\\c(x|yz)?", "^[^\\s\"]{2,5}$", "(?:ab|c)+d*", "x.y", "\\w+@\\w+\\.com",
            "[a-c-]{1,3}", "^$", "[\\d.]+e?", "(a|)b", "\\u00e9\\x41?"]
CANDIDATES = ["AB-123", "ab-123", "AB-1234", 'a"b\\c', 'a"b\\cyz', 'a"b\\cx', "abc", "a b", "xy", "x y", "x\ny",
              "x\ty", "x\"y", "ababcdd", "cd", "d", "me@site.com", "me@site.org", "a-c", "-", "abcd", "", "1.5e",
              "1.5ee", "b", "ab", "é", "éA", "ÉA", "x\\y", "ok", "long!"]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_a_pattern_grammar_admits_what_the_pattern_matches(pattern: str) -> None:
    from llmpack.runtime.grammar.schema_strings import pattern_expression

    admitted = re.compile(gbnf_to_regex(pattern_expression(pattern)))
    for text in CANDIDATES:
        as_json = json.dumps(text, ensure_ascii=False)[1:-1]
        assert bool(admitted.fullmatch(as_json)) == bool(re.fullmatch(pattern.strip("^$") or "", text)), text


def test_integer_bounds_admit_exactly_the_range() -> None:
    from llmpack.runtime.grammar.schema_numbers import integer_range

    for low, high in [(None, 5), (-5, 37), (0, 0), (1, 1000), (-1200, -3), (999, 10001), (123456, None), (-7, None),
                      (10, 19), (100, 199), (5, 95)]:
        admitted = re.compile(gbnf_to_regex(integer_range(low, high)))
        for n in [*range(-1300, 1300), 9999, 10000, 10001, 10002, 123455, 123456, 10 ** 15]:
            assert bool(admitted.fullmatch(str(n))) == ((low is None or n >= low) and (high is None or n <= high))
        assert not admitted.fullmatch("-0") and not admitted.fullmatch("007")
