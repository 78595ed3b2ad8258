"""llama.cpp's flags, as llama.cpp users type them: parsed as whole words (unit tests, no model), and
each one's effect on the real executable (end to end)."""

from __future__ import annotations

import pytest

from llmpack.runtime import messages
from llmpack.runtime.errors import UsageError
from llmpack.runtime.flag_values import process_escapes
from llmpack.runtime.settings import option_fields, parse_args


def settings(*argv: str):
    return parse_args(list(argv)).settings


def refusal(*argv: str) -> str:
    with pytest.raises(UsageError) as caught:
        parse_args(list(argv))
    message = str(caught.value)
    assert "\n" not in message and message.startswith("error:") and caught.value.exit_code == 2
    return message


# -- whole words: what argparse used to misread --------------------------------------------------

def test_multi_letter_short_flags_are_whole_words() -> None:
    s = settings("-fa", "-sys", "hi", "-tb", "2", "-ctk", "q8_0", "-cnv", "-ub", "64")
    assert (s.flash_attn, s.system_prompt, s.threads_batch, s.cache_type_k, s.ubatch_size) == ("on", "hi", 2, "q8_0", 64)
    assert s.file is None and s.seed == -1  # not `-f a`, not `-s ys`


def test_no_prefix_matching_and_no_attached_values() -> None:
    assert refusal("-n32") == messages.UNKNOWN_FLAG.format(arg="-n32")
    assert refusal("--ctx", "10") == messages.UNKNOWN_FLAG.format(arg="--ctx")
    assert refusal("-fal") == messages.UNKNOWN_FLAG.format(arg="-fal")
    assert refusal("stray") == messages.UNKNOWN_FLAG.format(arg="stray")


def test_long_flags_take_equals_values() -> None:
    s = settings("--ctx-size=1024", "--prompt=a=b", "--flash-attn=off", "--seed=-1")
    assert (s.ctx_size, s.prompt, s.flash_attn, s.seed) == (1024, "a=b", "off", -1)
    assert refusal("--mlock=yes") == messages.BAD_VALUE.format(flag="--mlock", reason="takes no value, got 'yes'")


def test_a_value_is_the_next_word_even_with_a_dash() -> None:
    assert settings("-n", "-1").n_predict == -1
    assert settings("-p", "-c").prompt == "-c"


def test_a_missing_value_is_one_line() -> None:
    assert refusal("-p", "x", "-sys") == messages.MISSING_VALUE.format(flag="-sys/--system-prompt")
    assert refusal("-ctk") == messages.MISSING_VALUE.format(flag="-ctk/--cache-type-k")


def test_later_flags_win_and_repeatable_flags_accumulate() -> None:
    s = settings("-fa", "on", "-fa", "off", "-ctk", "q4_0", "-ctk", "f32", "-r", "User:", "-r", "###")
    assert (s.flash_attn, s.cache_type_k, s.reverse_prompt) == ("off", "f32", ("User:", "###"))


def test_help_and_version_are_still_flags() -> None:
    assert parse_args(["-h"]).show_help and parse_args(["--help"]).show_help
    assert parse_args(["--version"]).show_version and not parse_args([]).show_version


# -- each flag's values ------------------------------------------------------------------------

@pytest.mark.parametrize("argv, expected", [
    ([], "auto"),  # llama.cpp's default
    (["-fa"], "on"),
    (["-fa", "--temp", "0"], "on"),
    (["-fa", "on"], "on"), (["-fa", "enabled"], "on"), (["-fa", "1"], "on"), (["-fa", "true"], "on"),
    (["-fa", "off"], "off"), (["-fa", "0"], "off"), (["-fa", "disabled"], "off"),
    (["-fa", "auto"], "auto"), (["-fa", "-1"], "auto"),
    (["--flash-attn", "off"], "off"),
])
def test_flash_attention_values(argv: list[str], expected: str) -> None:
    assert settings(*argv).flash_attn == expected


def test_flash_attention_bad_value() -> None:
    assert refusal("-fa", "sometimes") == messages.BAD_VALUE.format(
        flag="-fa/--flash-attn", reason="expected one of on, off, auto, got 'sometimes'")


def test_cache_types() -> None:
    assert (settings().cache_type_k, settings().cache_type_v) == ("f16", "f16")
    for name in ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1"):
        s = settings("-ctk", name, "--cache-type-v", name)
        assert (s.cache_type_k, s.cache_type_v) == (name, name)
    line = refusal("-ctv", "q3_k")
    assert line == messages.BAD_VALUE.format(flag="-ctv/--cache-type-v", reason=(
        "expected one of f32, f16, bf16, q8_0, q4_0, q4_1, iq4_nl, q5_0, q5_1, got 'q3_k'"))


def test_a_quantized_v_cache_without_flash_attention_is_refused() -> None:
    assert refusal("-ctv", "q8_0", "-fa", "off") == messages.QUANTIZED_V_NEEDS_FLASH_ATTN.format(type="q8_0")
    assert settings("-ctv", "q8_0").cache_type_v == "q8_0"  # auto turns flash attention on for it
    assert settings("-ctk", "q8_0", "-fa", "off").cache_type_k == "q8_0"  # a quantized K needs nothing


def test_threads_and_ubatch() -> None:
    s = settings("-tb", "3", "--ubatch-size", "128")
    assert (s.threads_batch, s.ubatch_size) == (3, 128)
    assert settings().threads_batch == 0 and settings().ubatch_size == 512
    assert "must be at least 1" in refusal("-ub", "0")
    assert "expected an integer" in refusal("--threads-batch", "many")


def test_escapes_follow_llama_cpp() -> None:
    assert process_escapes(r"a\nb\tc\rd\'e\"f\\g") == "a\nb\tc\rd'e\"f\\g"
    assert process_escapes(r"\x41\x4a!") == "AJ!"
    assert process_escapes(r"\q \x4 \xZZ trailing\\") == r"\q \x4 \xZZ trailing" + "\\"
    assert process_escapes("caf\u00e9 \\n") == "caf\u00e9 \n"


def test_escape_is_on_by_default_as_in_llama_cpp() -> None:
    assert settings("-p", r"one\ntwo", "-r", r"\n\n").prompt == "one\ntwo"
    assert settings("-r", r"\n\n").reverse_prompt == ("\n\n",)
    assert settings("-e", "-p", r"a\tb").prompt == "a\tb"
    raw = settings("--no-escape", "-p", r"one\ntwo", "-r", r"x\n")
    assert (raw.prompt, raw.reverse_prompt, raw.escape) == (r"one\ntwo", (r"x\n",), False)
    assert settings("--no-escape", "-e", "-p", r"a\nb").prompt == "a\nb"  # later wins


def test_json_schema_becomes_a_grammar() -> None:
    from llmpack.runtime.server.json_grammar import json_schema_grammar

    schema = '{"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}'
    s = settings("-j", schema)
    assert s.json_schema == schema
    assert s.grammar == json_schema_grammar({"type": "object", "properties": {"n": {"type": "integer"}},
                                             "required": ["n"]})


@pytest.mark.parametrize("argv, fragment", [
    (["-j", "{not json"], "-j/--json-schema: not valid JSON"),
    (["-j", "[1, 2]"], "-j/--json-schema: the JSON schema must be an object"),
    (["-j", '{"type": "string", "pattern": "a+"}'], "'pattern' is not supported"),
    (["-j", "{}", "--grammar", 'root ::= "a"'], messages.GRAMMAR_AND_SCHEMA),
    (["--grammar-file", "g.gbnf", "--json-schema", "{}"], messages.GRAMMAR_AND_SCHEMA),
])
def test_bad_json_schemas_are_one_line(argv: list[str], fragment: str) -> None:
    assert fragment in refusal(*argv)


def test_keep_has_only_its_honest_value() -> None:
    assert settings().keep == -1 and settings("--keep", "-1").keep == -1
    assert refusal("--keep", "32") == messages.KEEP_UNSUPPORTED.format(value=32)
    assert "must be at least -1" in refusal("--keep", "-2")


def test_string_flags() -> None:
    s = settings("-sys", "be brief", "-a", "my-model", "--log-file", "x.log", "--system-prompt", "be kind")
    assert (s.system_prompt, s.alias, s.log_file) == ("be kind", "my-model", "x.log")


def test_switches() -> None:
    s = settings("--ignore-eos", "--special", "--no-warmup", "--verbose-prompt")
    assert s.ignore_eos and s.special and s.no_warmup and s.verbose_prompt
    assert settings("-sp").special
    d = settings()
    assert not (d.ignore_eos or d.special or d.no_warmup or d.verbose_prompt)


def test_compatibility_flags_are_accepted_and_say_so() -> None:
    settings("--jinja", "-cnv", "--conversation", "--metrics", "-cb", "--cont-batching")
    compat = [f for f in option_fields() if f.metadata["group"] == "compat"]
    assert {flag for f in compat for flag in f.metadata["flags"]} == {
        "--jinja", "-cnv", "--conversation", "--metrics", "-cb", "--cont-batching"}
    for f in compat:
        assert f.metadata["help"].startswith("accepted for compatibility: ")


def test_every_flag_is_spelled_once() -> None:
    spellings = [flag for f in option_fields() for flag in (*f.metadata["flags"], *f.metadata["negations"])]
    assert len(spellings) == len(set(spellings))
    assert not {"-h", "--help", "--version"} & set(spellings)
