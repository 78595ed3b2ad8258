"""The GBNF checker in front of llama.cpp's grammar parser (runtime/grammar_check.py): hostile grammars
are refused with a precise reason, real grammars pass, and whatever it accepts llama.cpp parses too
(checked on the real llama.cpp with a tiny model). The JSON-schema converter refuses what would make
a hostile grammar, and what it makes passes the checker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from llmpack.runtime import messages
from llmpack.runtime.errors import GrammarFlagInvalid, GrammarInvalid, UsageError
from llmpack.runtime.grammar.check import (
    MAX_BYTES,
    MAX_DEPTH,
    MAX_REPEAT,
    GrammarRefused,
    check_grammar,
)
from llmpack.runtime.grammar.json_schema import (
    SchemaUnsupported,
    json_object_grammar,
    json_schema_grammar,
)

# -- llama.cpp's own grammars (its grammars/ folder), which must keep working ---------------------

STOCK = {
    "json": r'''
root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws

object ::=
  "{" ws (
            string ":" ws value
    ("," ws string ":" ws value)*
  )? "}" ws

array  ::=
  "[" ws (
            value
    ("," ws value)*
  )? "]" ws

string ::=
  "\"" (
    [^"\\\x7F\x00-\x1F] |
    "\\" (["\\bfnrt] | "u" [0-9a-fA-F]{4}) # escapes
  )* "\"" ws

number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws

# Optional space: by convention, applied in this grammar after literal chars when allowed
ws ::= | " " | "\n" [ \t]{0,20}
''',
    "arithmetic": r'''
root  ::= (expr "=" ws term "\n")+
expr  ::= term ([-+*/] term)*
term  ::= ident | num | "(" ws expr ")" ws
ident ::= [a-z] [a-z0-9_]* ws
num   ::= [0-9]+ ws
ws    ::= [ \t\n]*
''',
    "list": r'''
root ::= item+

# Excludes various line break characters
item ::= "- " [^\r\n\x0b\x0c\x85\u2028\u2029]+ "\n"
''',
    "chess": r'''
root    ::= "1. " move " " move "\n" ([1-9] [0-9]? ". " move " " move "\n")+
move    ::= (pawn | nonpawn | castle) [+#]?
nonpawn ::= [NBKQR] [a-h]? [1-8]? "x"? [a-h] [1-8]
pawn    ::= ([a-h] "x")? [a-h] [1-8] ("=" [NBKQR])?
castle  ::= "O-O" "-O"?
''',
    "english": r'''
root        ::= en-char+ ([ \t\n] en-char+)*
en-char     ::= letter | digit | punctuation
letter      ::= [a-zA-Z]
digit       ::= [0-9]
punctuation ::= [!"#$%&'()*+,-./:;<=>?@[\\\]^_`{|}~]
''',
    "japanese": '''
root        ::= jp-char+ ([ \\t\\n] jp-char+)*
jp-char     ::= hiragana | katakana | punctuation | cjk
hiragana    ::= [ぁ-ゟ]
katakana    ::= [ァ-ヿ]
punctuation ::= [、-〾]
cjk         ::= [一-鿿]
''',
    "c (ambiguous: statements share their first words)": r'''
root ::= (declaration)*
declaration ::= dataType identifier "(" parameter? ")" "{" statement* "}"
dataType  ::= "int" ws | "float" ws | "char" ws
identifier ::= [a-zA-Z_] [a-zA-Z_0-9]*
parameter ::= dataType identifier
statement ::=
    ( dataType identifier ws "=" ws expression ";" ) |
    ( identifier ws "=" ws expression ";" ) |
    ( identifier ws "(" argList? ")" ";" ) |
    ( "return" ws expression ";" ) |
    ( "while" "(" condition ")" "{" statement* "}" ) |
    ( "for" "(" forInit ";" ws condition ";" ws forUpdate ")" "{" statement* "}" ) |
    ( "if" "(" condition ")" "{" statement* "}" ("else" "{" statement* "}")? ) |
    ( singleLineComment ) |
    ( multiLineComment )
forInit ::= dataType identifier ws "=" ws expression | identifier ws "=" ws expression
forUpdate ::= identifier ws "=" ws expression
condition ::= expression relationOperator expression
relationOperator ::= ("<=" | "<" | "==" | "!=" | ">=" | ">")
expression ::= term (("+" | "-") term)*
term ::= factor(("*" | "/") factor)*
factor ::= identifier | number | unaryTerm | funcCall | parenExpression
unaryTerm ::= "-" factor
funcCall ::= identifier "(" argList? ")"
parenExpression ::= "(" ws expression ws ")"
argList ::= expression ("," ws expression)*
number ::= [0-9]+
singleLineComment ::= "//" [^\n]* "\n"
multiLineComment ::= "/*" ( [^*] | ("*" [^/]) )* "*/"
ws ::= ([ \t\n]+)
''',
    "crlf and comments": 'root ::= "a" | b # a comment\r\nb ::= [\\x41-\\U0001F600] {1,3} . ? ("x"\r\n  | "y")\r\n',
}

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 20},
        "age": {"type": ["integer", "null"]},
        "kind": {"enum": ["cat", "dog", 3, None, "\u00e9\u4e2d"]},
        "tags": {"type": "array", "items": {"type": "boolean"}, "minItems": 1, "maxItems": 3},
        "home": {"$ref": "#/$defs/place"},
        "note": {"const": "fixed \"quoted\"\n\x01"},
        "long": {"type": "string", "maxLength": 100_000},
        "many": {"type": "array", "maxItems": 500},
    },
    "required": ["name", "age", "home"],
    "$defs": {"place": {"type": "object", "properties": {"x": {"type": "number"}, "y": {"$ref": "#/$defs/place"}},
                        "required": ["x"]}},
}
MANY_OPTIONAL = {"type": "object", "properties": {f"p{i}": {"type": "string", "maxLength": 1000} for i in range(200)}}

# -- hostile grammars: each refused with its reason -------------------------------------------------

# Each "x" doubles llama.cpp's stacks (both readings stay alive until the "y" or "z"): 2**16 of them
# after 16 characters, each matched against every token at every step.
AMBIGUOUS = "root ::= p16\n" + "".join(f'p{k} ::= "x" p{k - 1} "y" | "x" p{k - 1} "z"\n' for k in range(1, 17)) + \
    'p0 ::= "w"\n'

HOSTILE = [
    ('root ::= "a"{2,1}', "repetition {2,1} has its minimum above its maximum (line 1)"),
    ('root ::= "a"{ 5 , 3 }', "repetition {5,3} has its minimum above its maximum (line 1)"),
    ("root ::= " + "(" * 20_000 + '"a"' + ")" * 20_000, f"parentheses nested deeper than {MAX_DEPTH} (line 1)"),
    ("root ::= [z-a]", "the character range z-a is reversed (U+007A is above U+0061) (line 1)"),
    ("root ::= [\\U0010FFFF-\\x00]", "the character range \\U0010FFFF-\\x00 is reversed"),
    ('root ::= "\\U00110000"', "\\U00110000 is above U+10FFFF"),
    ("root ::= [\\UFFFFFFFF]", "\\UFFFFFFFF is above U+10FFFF"),
    ('root ::= "a"\nb ::= "\\q"', "unknown escape '\\\\q' (line 2)"),
    ('root ::= "\\x4"', "\\x needs 2 hex digits"),
    ('root ::= "\\x00"', "U+0000, which no model output can contain"),
    ('root ::= "\\uD800"', "U+D800, which no model output can contain"),
    ("root ::= [^\\x00-\\U0010FFFF]", "matches no character a model can produce"),
    ("root ::= [\\x00]", "matches no character a model can produce"),
    ("root ::= []", "the character class [] is empty"),
    ('root ::= "a"{1001}', f"repetition {{1001}} is above the limit of {MAX_REPEAT}"),
    ('root ::= "a"{0,99999999999999999999999}', f"is above the limit of {MAX_REPEAT}"),
    ('root ::= "a"{1000}{1000}', "expands to too many rules"),
    ('root ::= ("a"{0,1000}){0,1000}', "expands to too many rules"),
    ('root ::= "' + "a" * 60_000 + '"{900}', "beyond the grammar's size limit"),
    ("root ::= *", "'*' follows nothing it could repeat (line 1)"),
    ('root ::= "a" {', "expected a number"),
    ('root ::= "a"{2', "expected ',' or '}'"),
    ('root ::= "abc', "a string literal is not closed (line 1)"),
    ("root ::= [abc", "a '[' character class is not closed"),
    ('root ::= ("a"', "a '(' is not closed"),
    ('root ::= "a" )', "unexpected ')' in rule 'root' (line 1)"),
    ('root "a"', "expected '::=' after the rule name 'root'"),
    ('::= "a"', "expected a rule name"),
    ('root ::= "a" b\n\n\nc ::= "c"', "rule 'b' is used but never defined (line 1)"),
    ('item ::= "a"', "the grammar has no 'root' rule"),
    ("# only a comment\n", "the grammar has no rules"),
    ('root ::= root "a" | "b"', "rule 'root' is left-recursive"),
    ('root ::= a\na ::= b? c\nb ::= "b"\nc ::= a "c"', "is left-recursive"),
    ('root ::= <[1]>', "token references (<...>, !<...>) are not supported"),
    ('root ::= !<hello>', "token references"),
    ('root ::= "a"\x00 junk', "the grammar holds a NUL character"),
    ('root ::= "\ud800"', "unpaired surrogate ('\\ud800')"),
    ('root ::= "' + "a" * MAX_BYTES + '"', f"above the limit of {MAX_BYTES}"),
    ("root ::= r0\n" + "".join(f"r{i} ::= r{i + 1} | r{i + 1}\n" for i in range(40)) + 'r40 ::= "x"\n',
     "too many alternatives of alternatives"),
    ("root ::= r0\n" + "".join(f"r{i} ::= r{i + 1}\n" for i in range(3000)) + 'r3000 ::= "x"\n',
     "too many alternatives of alternatives"),
    (AMBIGUOUS, "rule 'root' is ambiguous enough to make llama.cpp follow more than 1024 readings of the text"),
    ('root ::= "a"{900} p16\n' + AMBIGUOUS.split("\n", 1)[1], "rule 'p16' is ambiguous enough"),
    (AMBIGUOUS.replace('"x" p', '"x" "a"{40} p'), "rule 'root' is ambiguous enough"),
]


@pytest.mark.parametrize("grammar, reason", HOSTILE, ids=[f"hostile-{i}" for i in range(len(HOSTILE))])
def test_hostile_grammars_are_refused_with_their_reason(grammar: str, reason: str) -> None:
    with pytest.raises(GrammarRefused) as refused:
        check_grammar(grammar)
    assert reason in refused.value.reason


def test_the_reason_names_the_line() -> None:
    with pytest.raises(GrammarRefused) as refused:
        check_grammar('root ::= a\n# two\n\na ::= "x"{9,3}\n')
    assert refused.value.reason == "repetition {9,3} has its minimum above its maximum (line 4)"


@pytest.mark.parametrize("name", sorted(STOCK))
def test_llama_cpp_stock_grammars_pass(name: str) -> None:
    check_grammar(STOCK[name])


@pytest.mark.parametrize("schema", [PERSON, MANY_OPTIONAL, {"type": "array", "items": {"type": "string"}}, {}],
                         ids=["person", "many-optional", "array", "any"])
def test_grammars_of_our_json_schema_converter_pass(schema: dict) -> None:
    check_grammar(json_schema_grammar(schema))
    check_grammar(json_object_grammar())


# -- the JSON-schema converter ------------------------------------------------------------------

def _deep(levels: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "array", "items": schema}
    return schema


@pytest.mark.parametrize("schema, reason", [
    ({"type": "string", "minLength": 5, "maxLength": 2}, "maxLength is below minLength (2 < 5)"),
    ({"type": "array", "minItems": 3, "maxItems": 1}, "maxItems is below minItems"),
    ({"type": "string", "minLength": 5000}, "minLength 5000 is above the supported 1000"),
    ({"type": "array", "minItems": 10 ** 9}, "minItems 1000000000 is above the supported 1000"),
    ({"type": "string", "minLength": -1}, "'minLength' must be a non-negative integer, got -1"),
    ({"type": "string", "maxLength": 2.5}, "'maxLength' must be a non-negative integer, got 2.5"),
    ({"type": "array", "maxItems": "3"}, "'maxItems' must be a non-negative integer"),
    ({"type": "string", "minLength": True}, "'minLength' must be a non-negative integer"),
    ({"type": "object", "properties": {"\ud800": {}}}, "unpaired surrogate ('\\ud800')"),
    ({"type": "object", "properties": {"a": {"const": "x\udfff"}}}, "unpaired surrogate ('\\udfff')"),
    ({"enum": ["ok", "\ud83d"]}, "unpaired surrogate"),
    ({"type": "object", "properties": {"a": {}}, "required": "a"}, "'required' must be a list of property names"),
    ({"type": "object", "properties": {"a": {}}, "required": [{"x": 1}]}, "'required' must be a list"),
    (_deep(5000), "nested deeper than 64 levels"),
    ({"$ref": "#/$defs/d0", "$defs": {**{f"d{i}": {"type": "array", "items": {"$ref": f"#/$defs/d{i + 1}"}}
                                         for i in range(300)}, "d300": {"type": "null"}}},
     "nests sub-schemas deeper than 64 levels"),
])
def test_hostile_schemas_are_refused_with_their_reason(schema: dict, reason: str) -> None:
    with pytest.raises(SchemaUnsupported) as refused:
        json_schema_grammar(schema)
    assert reason in str(refused.value)


def test_a_float_count_that_is_an_integer_is_taken() -> None:
    assert "char{2,4}" in json_schema_grammar({"type": "string", "minLength": 2.0, "maxLength": 4})


# -- property tests: the checker's only failure is GrammarRefused ---------------------------------

PIECES = ["root", "a", "b", " ::= ", "::=", " ", "\n", "\r\n", "|", "(", ")", "*", "+", "?", ".", "{", "}", ",",
          "{2,1}", "{3}", "{0,}", "{1,4}", "{1001}", '"', '"x"', '"\\n"', "[", "]", "[^", "-", "[a-z]", "[z-a]",
          "\\", "\\x41", "\\x0", "\\u00e9", "\\U0010FFFF", "\\U00110000", "\\q", "#c\n", "é", "<", "!", "0", "9",
          "\x00", "\ud800", "\t"]
NAMES = ["root", "a", "b", "c"]


def _expression(depth: int = 3) -> st.SearchStrategy[str]:
    good = st.sampled_from(["a", "Z", "\\n", "\\\\", '\\"', "\\x41", "\\u00e9", "\\U0001F600", "é", "-", "\\]",
                            "\\x7F", "\\U0010FFFF"])
    bad = st.sampled_from(["\\x00", "\\U00110000", "\\uD800", "\\q", "\\x4"])
    char = st.integers(0, 29).flatmap(lambda i: bad if i == 0 else good)  # mostly valid: many grammars pass
    literal = st.lists(char, max_size=4).map(lambda cs: '"' + "".join(cs) + '"')
    item = st.one_of(char, st.tuples(char, char).map("-".join))
    klass = st.tuples(st.booleans(), st.lists(item, min_size=1, max_size=3)).map(
        lambda t: ("[^" if t[0] else "[") + "".join(t[1]) + "]")
    base = st.one_of(literal, klass, st.sampled_from(NAMES), st.just("."))
    bound = st.integers(0, 1200)
    operator = st.one_of(st.sampled_from(["*", "+", "?"]), bound.map(lambda m: f"{{{m}}}"),
                         bound.map(lambda m: f"{{{m},}}"), st.tuples(bound, bound).map(lambda t: f"{{{t[0]},{t[1]}}}"))

    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.one_of(
            st.lists(inner, min_size=1, max_size=3).map(" ".join),
            st.lists(inner, min_size=2, max_size=3).map(lambda xs: "(" + " | ".join(xs) + ")"),
            st.tuples(inner, operator).map("".join),
        )

    return st.recursive(base, extend, max_leaves=12)


RANDOM_TEXT = st.tuples(st.booleans(), st.lists(st.sampled_from(PIECES), max_size=30)).map(
    lambda t: ("root ::= " if t[0] else "") + "".join(t[1]))
# Every name defined, mostly: the grammars that get past the checker are the ones to try on llama.cpp.
STRUCTURED = st.tuples(st.lists(st.sampled_from(NAMES), min_size=1, max_size=4, unique=True),
                       st.lists(_expression(), min_size=4, max_size=4)).map(
    lambda t: "\n".join(f"{name} ::= {body}" for name, body in zip(t[0], t[1])) + "\n")
GRAMMARS = st.one_of(RANDOM_TEXT, STRUCTURED)


def checked(grammar: str) -> bool:
    """True when the checker accepts `grammar`; its refusal is the only other outcome allowed."""
    try:
        check_grammar(grammar)
    except GrammarRefused as refused:
        assert refused.reason and "\n" not in refused.reason
        return False
    return True


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(GRAMMARS)
def test_any_text_passes_or_is_refused_never_anything_else(grammar: str) -> None:
    checked(grammar)


_SCHEMA_LEAF = st.one_of(
    st.sampled_from([{"type": t} for t in ("string", "integer", "number", "boolean", "null", "object", "array")]),
    st.fixed_dictionaries({"type": st.just("string")},
                          optional={"minLength": st.integers(-2, 1500), "maxLength": st.integers(-2, 1500)}),
    st.fixed_dictionaries({"const": st.text(max_size=5)}),
    st.fixed_dictionaries({"enum": st.lists(st.one_of(st.text(max_size=4), st.integers(), st.none()), max_size=3)}),
    st.sampled_from([{"$ref": "#/$defs/x"}, {"$ref": "#/$defs/none"}, {"pattern": "a"}, True, False, {}]),
)
SCHEMAS = st.recursive(_SCHEMA_LEAF, lambda inner: st.one_of(
    st.fixed_dictionaries({"type": st.just("array"), "items": inner},
                          optional={"minItems": st.integers(-1, 1200), "maxItems": st.integers(-1, 1200)}),
    st.dictionaries(st.text(max_size=6), inner, max_size=4).flatmap(lambda props: st.fixed_dictionaries(
        {"type": st.just("object"), "properties": st.just(props),
         "required": st.lists(st.sampled_from(sorted(props) or ["missing"]), max_size=2, unique=True)})),
    st.lists(inner, min_size=1, max_size=3).map(lambda xs: {"anyOf": xs}),
), max_leaves=10).map(lambda s: {**s, "$defs": {"x": {"type": "string"}}} if isinstance(s, dict) else s)


def schema_grammar(schema: object) -> str | None:
    """The grammar of `schema`, or None when the converter or the checker refuses it with a reason."""
    try:
        grammar = json_schema_grammar(schema)  # type: ignore[arg-type]
    except SchemaUnsupported as refused:
        assert str(refused)
        return None
    return grammar if checked(grammar) else None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SCHEMAS)
def test_any_schema_converts_or_is_refused_never_anything_else(schema: object) -> None:
    schema_grammar(schema)


# -- the real llama.cpp agrees, and the engine refuses with the reason --------------------------

@pytest.fixture(scope="module")
def engine(tiny_gguf: Path):
    from llmpack.runtime.engine.engine import Engine
    from llmpack.runtime.engine.native import route_native_logs
    from llmpack.runtime.engine.types import EngineConfig, ModelSource

    route_native_logs(5)  # llama.cpp logs each parse error; nothing to read here
    engine = Engine(ModelSource(str(tiny_gguf)), EngineConfig(n_ctx=256, n_threads=1))
    yield engine
    engine.close()


def test_llama_cpp_parses_what_passes(engine) -> None:
    for grammar in [*STOCK.values(), json_object_grammar(), *(json_schema_grammar(s) for s in (PERSON, MANY_OPTIONAL))]:
        engine.check_grammar(grammar)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.one_of(GRAMMARS, SCHEMAS.map(lambda s: schema_grammar(s) or "")))
def test_llama_cpp_parses_every_grammar_the_checker_accepts(engine, grammar: str) -> None:
    if grammar and checked(grammar):
        engine.check_grammar(grammar)  # GrammarInvalid here would mean the two parsers disagree


@pytest.mark.parametrize("grammar, reason", HOSTILE[:6], ids=[f"hostile-{i}" for i in range(6)])
def test_engine_refuses_hostile_grammars_with_the_reason(engine, grammar: str, reason: str) -> None:
    from llmpack.runtime.engine.types import GenerationRequest, SamplingParams

    with pytest.raises(GrammarInvalid) as refused:
        engine.check_grammar(grammar)
    assert str(refused.value) == messages.GRAMMAR_REFUSED.format(reason=refused.value.reason)
    assert reason in str(refused.value)
    tokens = tuple(engine.tokenize("hi", True, False))
    with pytest.raises(GrammarInvalid, match=None) as refused:  # the sampler chain checks too
        list(engine.generate(GenerationRequest(tokens, 2, SamplingParams(temperature=0, grammar=grammar))))
    assert reason in str(refused.value)


def test_generation_under_an_accepted_grammar_follows_it(engine) -> None:
    from llmpack.runtime.engine.types import GenerationRequest, SamplingParams

    tokens = tuple(engine.tokenize("hi", True, False))
    grammar = 'root ::= "ab" [0-9]{2,3} "."'
    text = "".join(p.text for p in engine.generate(GenerationRequest(tokens, 20, SamplingParams(temperature=0,
                                                                                                 grammar=grammar))))
    assert text[:2] == "ab" and text.endswith(".") and text[2:-1].isdigit() and 2 <= len(text) - 3 <= 3


# -- --grammar / --grammar-file -------------------------------------------------------------------

def test_a_refused_grammar_flag_is_a_usage_error(tmp_path: Path) -> None:
    from llmpack.runtime.flags.settings import Settings
    from llmpack.runtime.sampling import grammar_text

    with pytest.raises(GrammarFlagInvalid) as refused:
        grammar_text(Settings(grammar='root ::= "a"{2,1}'))
    assert isinstance(refused.value, UsageError) and refused.value.exit_code == 2
    assert str(refused.value) == messages.GRAMMAR_FLAG_REFUSED.format(
        flag="--grammar", reason="repetition {2,1} has its minimum above its maximum (line 1)")
    path = tmp_path / "g.gbnf"
    path.write_text('root ::= "x"\nnext ::= [z-a]\n')
    with pytest.raises(GrammarFlagInvalid) as refused:
        grammar_text(Settings(grammar_file=str(path)))
    assert str(refused.value).startswith(f"--grammar-file {path}: the character range z-a is reversed")
    assert "(line 2)" in str(refused.value)
    path.write_bytes(b'root ::= "\xff"\n')
    with pytest.raises(GrammarFlagInvalid, match="not UTF-8"):
        grammar_text(Settings(grammar_file=str(path)))
    path.write_text(STOCK["json"])
    assert grammar_text(Settings(grammar_file=str(path))) == STOCK["json"]


def test_a_json_schema_flag_whose_grammar_is_refused_names_that_flag() -> None:
    from llmpack.runtime.flags.settings import parse_args

    # 400 optional properties: a grammar above the size limit, made from -j.
    schema = json.dumps({"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(400)}})
    with pytest.raises(GrammarFlagInvalid) as refused:
        from llmpack.runtime.sampling import grammar_text

        grammar_text(parse_args(["-j", schema]).settings)
    assert str(refused.value).startswith("-j/--json-schema: the grammar is ")
