"""llama.cpp's flags, as llama.cpp users type them: parsed as whole words (unit tests, no model), and
each one's effect on the real executable (end to end)."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import gguf
import openai
import pytest
from llmpack.runtime import messages
from llmpack.runtime.errors import UsageError
from llmpack.runtime.flags.settings import option_fields, parse_args
from llmpack.runtime.flags.values import process_escapes
from support.commands import build_bundle, error_line, one_error_line, run
from support.server_fixtures import running_server
from support.tiny_model import _vocabulary, write_tiny_gguf


def settings(*argv: str):
    return parse_args(list(argv)).settings


def refusal(*argv: str) -> str:
    with pytest.raises(UsageError) as caught:
        parse_args(list(argv))
    message = str(caught.value)
    assert "\n" not in message and caught.value.exit_code == 2
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
    # ggml's GGML_MAX_N_THREADS: llama.cpp crashed (segmentation fault) with more.
    assert refusal("-tb", "513") == messages.BAD_VALUE.format(flag="-tb/--threads-batch", reason="must be between 0 and 512, got 513")
    assert "must be between 0 and 512" in refusal("-t", "100000")


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
    from llmpack.runtime.grammar.json_schema import json_schema_grammar

    schema = '{"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}'
    s = settings("-j", schema)
    assert s.json_schema == schema
    assert s.grammar == json_schema_grammar({"type": "object", "properties": {"n": {"type": "integer"}},
                                             "required": ["n"]})


@pytest.mark.parametrize("argv, fragment", [
    (["-j", "{not json"], "-j/--json-schema: not valid JSON"),
    (["-j", "[1, 2]"], "-j/--json-schema: the JSON schema must be an object"),
    (["-j", '{"type": "string", "pattern": "(?=a)a+"}'], "'pattern' is not supported"),
    (["-j", "{}", "--grammar", 'root ::= "a"'], messages.GRAMMAR_AND_SCHEMA),
    (["--grammar-file", "g.gbnf", "--json-schema", "{}"], messages.GRAMMAR_AND_SCHEMA),
    (["-j", "{}", "--ignore-eos"], messages.IGNORE_EOS_WITH_GRAMMAR),
    (["--ignore-eos", "--grammar", 'root ::= "a"'], messages.IGNORE_EOS_WITH_GRAMMAR),
    (["--ignore-eos", "--grammar-file", "g.gbnf"], messages.IGNORE_EOS_WITH_GRAMMAR),
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


def test_the_cli_checks_its_grammar_before_printing_anything(capsysbinary) -> None:
    from llmpack.runtime.cli import mode as cli_mode
    from llmpack.runtime.engine.types import SamplingParams
    from llmpack.runtime.errors import GrammarInvalid

    class RefusingEngine:
        n_ctx = 512

        def tokenize(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
            return [1, 2, 3]

        def check_fits(self, n_tokens: int) -> None:
            pass

        def check_grammar(self, grammar: str) -> None:
            raise GrammarInvalid()

        def generate(self, request, cancel=None):
            raise AssertionError("generation must not start")

    with pytest.raises(GrammarInvalid):
        cli_mode.complete(settings("--cli", "-p", "hello"), RefusingEngine(), "hello",
                          SamplingParams(grammar='root ::= "a"'))
    assert capsysbinary.readouterr().out == b""


# -- end to end: each flag's effect on the real executable ---------------------------------------

GREEDY = ["--cli", "-n", "16", "--temp", "0", "-t", "1"]


def complete(bundle: Path, *args: str, **kwargs):
    return run([str(bundle), *args], **kwargs)


def native_log(bundle: Path, *args: str) -> str:
    """llama.cpp's own log (--verbose) of a short completion."""
    result = complete(bundle, *GREEDY, "-n", "2", "-p", "hello", "--verbose", *args)
    assert result.returncode == 0, result.stderr
    return result.stderr


@pytest.fixture(scope="module")
def wide_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model with 32-wide attention heads: a quantized cache's blocks (32 values) divide them."""
    path = write_tiny_gguf(tmp_path_factory.mktemp("wide") / "wide.gguf", n_embd=128, n_head=4, name="wide-test-model")
    return build_bundle(path, path.with_suffix(".llmpack"))


YES = _vocabulary()[0].index("\u2581yes")


@pytest.fixture(scope="module")
def eager_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model whose next token is always the end of generation (</s>), or " yes" when that is
    ruled out: the layers add nothing to the residual stream, which is then the token's embedding,
    whose first component is positive; only </s> and " yes" read that component, </s> more strongly."""
    path = write_tiny_gguf(tmp_path_factory.mktemp("eager") / "eager.gguf", name="eager-test-model")
    reader = gguf.GGUFReader(str(path), "r+")
    tensors = {t.name: t for t in reader.tensors}
    for name, tensor in tensors.items():
        if name.endswith(("attn_output.weight", "ffn_down.weight")):
            tensor.data[...] = 0
    tensors["token_embd.weight"].data[:, 0] = 1.0
    tensors["output_norm.weight"].data[...] = 0
    tensors["output_norm.weight"].data[0] = 1.0
    output = tensors["output.weight"].data
    output[...] = 0
    output[2, 0], output[YES, 0] = 10.0, 5.0
    reader.data.flush()
    del reader
    return build_bundle(path, path.with_suffix(".llmpack"))


@pytest.mark.slow
@pytest.mark.parametrize("args, shown", [
    ([], "auto"), (["-fa"], "enabled"), (["-fa", "on"], "enabled"), (["-fa", "off"], "disabled"),
    (["--flash-attn=auto"], "auto"),
])
def test_flash_attention_reaches_llama_cpp(tiny_bundle: Path, args: list[str], shown: str) -> None:
    assert re.search(rf"flash_attn\s+=\s+{shown}\b", native_log(tiny_bundle, *args))


@pytest.mark.slow
def test_a_bare_fa_before_another_flag_is_not_a_prompt_file(tiny_bundle: Path) -> None:
    with_fa = complete(tiny_bundle, "-fa", *GREEDY, "--log-disable", "-p", "hello")
    without = complete(tiny_bundle, *GREEDY, "--log-disable", "-p", "hello")
    assert with_fa.returncode == 0, with_fa.stderr
    assert with_fa.stdout.startswith("hello") and len(with_fa.stdout) > len("hello")
    assert without.returncode == 0


@pytest.mark.slow
def test_cache_types_reach_llama_cpp(wide_bundle: Path) -> None:
    default = native_log(wide_bundle)
    assert "K (f16)" in default and "V (f16)" in default
    quantized = native_log(wide_bundle, "-ctk", "q8_0", "--cache-type-v", "q4_0")
    assert "K (q8_0)" in quantized and "V (q4_0)" in quantized
    assert re.search(r"flash_attn\s+=\s+enabled\b", quantized)  # auto turned on for the quantized V cache


@pytest.mark.slow
def test_cache_type_errors_are_one_line(tiny_bundle: Path) -> None:
    bad_name = complete(tiny_bundle, *GREEDY, "-p", "hi", "-ctk", "q8")
    assert one_error_line(bad_name).startswith("error: -ctk/--cache-type-k: expected one of f32, f16, bf16, q8_0")
    assert bad_name.returncode == 2
    no_flash = complete(tiny_bundle, *GREEDY, "-p", "hi", "-ctv", "q8_0", "-fa", "off")
    assert one_error_line(no_flash) == error_line(messages.QUANTIZED_V_NEEDS_FLASH_ATTN.format(type="q8_0"))
    assert no_flash.returncode == 2 and no_flash.stdout == ""
    # The tiny model's 16-wide heads cannot hold q8_0's 32-value blocks: llama.cpp refuses the context.
    refused = complete(tiny_bundle, *GREEDY, "-p", "hi", "-ctk", "q8_0", "--log-disable")
    assert one_error_line(refused) == error_line(messages.CONTEXT_FAILED_CACHE_TYPES.format(type_k="q8_0", type_v="f16"))
    assert refused.stdout == ""


@pytest.mark.slow
def test_ubatch_size_reaches_llama_cpp(tiny_bundle: Path) -> None:
    assert re.search(r"n_ubatch\s+=\s+512\b", native_log(tiny_bundle))
    assert re.search(r"n_ubatch\s+=\s+64\b", native_log(tiny_bundle, "-ub", "64"))
    assert re.search(r"n_ubatch\s+=\s+32\b", native_log(tiny_bundle, "-ub", "64", "-b", "32"))  # at most -b


@pytest.mark.slow
@pytest.mark.parametrize("flag", ["-t", "-tb"])
def test_thread_counts_above_ggml_maximum_are_one_line(tiny_bundle: Path, flag: str) -> None:
    result = complete(tiny_bundle, *GREEDY, "-p", "hello", flag, "100000")
    assert "must be between 0 and 512, got 100000" in one_error_line(result)  # was a segmentation fault
    assert result.returncode == 2


@pytest.mark.slow
def test_threads_batch_reaches_the_context(tiny_gguf: Path) -> None:
    from llmpack.runtime.engine.engine import Engine
    from llmpack.runtime.engine.native import llama
    from llmpack.runtime.engine.types import ModelSource
    from llmpack.runtime.plan import engine_config

    config = engine_config(settings("-t", "1", "-tb", "3", "--no-warmup"))
    assert (config.n_threads, config.n_threads_batch) == (1, 3)
    assert engine_config(settings("-t", "2")).n_threads_batch == 2  # -tb 0: the same as -t
    engine = Engine(ModelSource(str(tiny_gguf)), dataclasses.replace(config, n_ctx=512))
    try:
        assert llama.llama_n_threads(engine.context) == 1
        assert llama.llama_n_threads_batch(engine.context) == 3
    finally:
        engine.close()


@pytest.mark.slow
def test_warm_up_runs_unless_no_warmup(tiny_bundle: Path) -> None:
    assert "warm-up: 2 tokens decoded" in native_log(tiny_bundle)
    assert "warm-up" not in native_log(tiny_bundle, "--no-warmup")


@pytest.mark.slow
def test_json_schema_constrains_the_completion(tiny_bundle: Path) -> None:
    schema = '{"type": "object", "properties": {"n": {"type": "integer"}, "ok": {"type": "boolean"}}, "required": ["n", "ok"]}'
    result = complete(tiny_bundle, *GREEDY, "-n", "400", "--log-disable", "--no-display-prompt", "-p", "hello", "-j", schema)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert list(document) == ["n", "ok"]
    assert isinstance(document["n"], int) and isinstance(document["ok"], bool)


@pytest.mark.slow
def test_json_schema_constrains_the_chat(tiny_bundle: Path) -> None:
    schema = '{"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}'
    result = complete(tiny_bundle, "--chat", "-n", "300", "-t", "1", "--log-disable", "-j", schema,
                      input="hello\n", timeout=60)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert list(document) == ["answer"] and isinstance(document["answer"], int)


@pytest.mark.slow
@pytest.mark.parametrize("args, fragment", [
    (["-j", "{nope"], "error: -j/--json-schema: not valid JSON"),
    (["-j", '{"type": "string", "not": {}}'], "'not' is not supported"),
    (["-j", "{}", "--grammar", 'root ::= "a"'], messages.GRAMMAR_AND_SCHEMA),
    # Not an abort inside llama.cpp's grammar once the document is complete.
    (["-j", '{"type": "boolean"}', "--ignore-eos"], messages.IGNORE_EOS_WITH_GRAMMAR),
])
def test_bad_json_schemas_are_one_line_before_anything_is_printed(tiny_bundle: Path, args, fragment) -> None:
    result = complete(tiny_bundle, *GREEDY, "-p", "hello", *args)
    assert fragment in one_error_line(result)
    assert result.returncode == 2 and result.stdout == ""


@pytest.mark.slow
def test_a_grammar_llama_cpp_refuses_prints_nothing(tiny_bundle: Path) -> None:
    result = complete(tiny_bundle, *GREEDY, "-p", "hello", "--grammar", "root ::= [", "--log-disable")
    one_error_line(result)
    assert result.stdout == ""


@pytest.mark.slow
def test_reverse_prompt_stops_the_cli(tiny_bundle: Path) -> None:
    base = complete(tiny_bundle, *GREEDY, "-n", "24", "--log-disable", "--no-display-prompt", "-p", "the cat")
    assert base.returncode == 0 and len(base.stdout) > 12, base.stdout
    stop = base.stdout[8:12]
    cut = complete(tiny_bundle, *GREEDY, "-n", "24", "--log-disable", "--no-display-prompt", "-p", "the cat",
                   "-r", "never there", "-r", stop)
    assert cut.returncode == 0, cut.stderr
    assert cut.stdout == base.stdout[:base.stdout.index(stop)]


@pytest.mark.slow
def test_reverse_prompt_stops_the_chat(tiny_bundle: Path) -> None:
    chat = ["--chat", "-n", "24", "-t", "1", "--log-disable"]
    base = complete(tiny_bundle, *chat, input="hello\n", timeout=60)
    assert base.returncode == 0, base.stderr
    reply = base.stdout.strip()
    assert len(reply) > 12, reply
    stop = reply[6:10]
    cut = complete(tiny_bundle, *chat, "-r", stop, input="hello\n", timeout=60)
    assert cut.returncode == 0, cut.stderr
    assert cut.stdout.strip() == reply[:reply.index(stop)].strip()


@pytest.mark.slow
def test_ignore_eos_and_special(eager_bundle: Path) -> None:
    quiet = [*GREEDY, "--no-display-prompt", "-p", "hello"]
    stops = complete(eager_bundle, *quiet)
    assert stops.returncode == 0, stops.stderr
    assert stops.stdout == "" and "0 tokens in" in stops.stderr  # </s> at once
    special = complete(eager_bundle, *quiet, "--special", "--log-disable")
    assert special.stdout == "</s>"
    ignoring = complete(eager_bundle, *quiet, "--ignore-eos")
    assert ignoring.returncode == 0, ignoring.stderr
    assert ignoring.stdout.split() == ["yes"] * 16 and "16 tokens in" in ignoring.stderr


@pytest.mark.slow
def test_ignore_eos_in_the_chat(eager_bundle: Path) -> None:
    chat = ["--chat", "-n", "5", "-t", "1", "--log-disable"]
    assert complete(eager_bundle, *chat, input="hello\n", timeout=60).stdout.strip() == ""
    replies = complete(eager_bundle, *chat, "--ignore-eos", input="hello\n", timeout=60)
    assert replies.returncode == 0, replies.stderr
    assert replies.stdout.split() == ["yes"] * 5


@pytest.mark.slow
def test_escapes_in_the_prompt(tiny_bundle: Path) -> None:
    typed = complete(tiny_bundle, *GREEDY, "--log-disable", "-p", r"one\ntwo")
    real = complete(tiny_bundle, *GREEDY, "--log-disable", "-p", "one\ntwo")
    raw = complete(tiny_bundle, *GREEDY, "--log-disable", "--no-escape", "-p", r"one\ntwo")
    assert typed.returncode == real.returncode == raw.returncode == 0
    assert typed.stdout == real.stdout and typed.stdout.startswith("one\ntwo")
    assert raw.stdout.startswith(r"one\ntwo")


@pytest.mark.slow
def test_verbose_prompt_in_the_cli(tiny_bundle: Path) -> None:
    result = complete(tiny_bundle, *GREEDY, "-n", "2", "-p", r"hello\nworld", "--verbose-prompt")
    assert result.returncode == 0, result.stderr
    found = re.search(r"prompt \((\d+) tokens\): (.*)$", result.stderr, re.MULTILINE)
    assert found and json.loads(found.group(2)) == "hello\nworld"
    assert f"prompt: {found.group(1)} tokens" in result.stderr  # the count the generation reports
    assert "prompt (" not in complete(tiny_bundle, *GREEDY, "-n", "2", "-p", "hello").stderr


@pytest.mark.slow
def test_system_prompt_and_verbose_prompt_in_the_chat(tiny_bundle: Path) -> None:
    chat = ["--chat", "-n", "2", "-t", "1", "--verbose-prompt"]
    result = complete(tiny_bundle, *chat, "-p", "from p", "-sys", "from sys", input="hi\n", timeout=60)
    assert result.returncode == 0, result.stderr
    found = re.search(r"prompt \((\d+) tokens\): (.*)$", result.stderr, re.MULTILINE)
    assert found, result.stderr
    rendered = json.loads(found.group(2))  # Gemma's template: the system prompt folded into the turn
    assert "from sys" in rendered and "from p" not in rendered and rendered.endswith("<start_of_turn>model\n")
    with_p = complete(tiny_bundle, *chat, "-p", "from p", input="hi\n", timeout=60)
    assert "from p" in json.loads(re.search(r"prompt \(\d+ tokens\): (.*)$", with_p.stderr, re.MULTILINE).group(1))


@pytest.mark.slow
def test_system_prompt_is_refused_in_the_cli(tiny_bundle: Path) -> None:
    result = complete(tiny_bundle, *GREEDY, "-p", "hi", "-sys", "be brief")
    assert one_error_line(result) == error_line(messages.SYSTEM_PROMPT_IN_CLI) and result.stdout == ""


@pytest.mark.slow
def test_log_file_is_appended_to(tiny_bundle: Path, tmp_path: Path) -> None:
    log_file = tmp_path / "run.log"
    first = complete(tiny_bundle, *GREEDY, "-p", "hello", "--log-file", str(log_file))
    second = complete(tiny_bundle, *GREEDY, "-p", "hello", "--log-file", str(log_file), "--log-disable")
    assert first.returncode == second.returncode == 0
    assert "tokens in" in first.stderr and second.stderr == ""  # --log-disable: stderr only
    assert first.stdout == second.stdout
    assert log_file.read_text().count("tokens in") == 2
    unwritable = complete(tiny_bundle, *GREEDY, "-p", "hello", "--log-file", str(tmp_path / "no" / "x.log"))
    assert one_error_line(unwritable) == error_line(messages.LOG_FILE_UNWRITABLE.format(
        path=tmp_path / "no" / "x.log", reason="No such file or directory"))
    assert unwritable.returncode == 2


@pytest.mark.slow
def test_compatibility_flags_change_nothing(tiny_bundle: Path) -> None:
    plain = complete(tiny_bundle, *GREEDY, "--log-disable", "-p", "hello")
    compat = complete(tiny_bundle, *GREEDY, "--log-disable", "-p", "hello", "--jinja", "-cnv", "--metrics", "-cb")
    assert compat.returncode == 0 and compat.stdout == plain.stdout


@pytest.mark.slow
def test_help_explains_the_new_flags(tiny_bundle: Path) -> None:
    page = complete(tiny_bundle, "--help").stdout
    for text in ("-fa, --flash-attn [on|off|auto]", "-ctk, --cache-type-k TYPE", "--no-escape", "--keep N",
                 "accepted for compatibility: the server always serves GET /metrics"):
        assert text in page


@pytest.mark.slow
def test_alias_and_verbose_prompt_in_the_server(tiny_bundle: Path, tmp_path: Path) -> None:
    with running_server(tiny_bundle, "-c", "512", "-t", "1", "-a", "my-alias", "--verbose-prompt",
                        log_path=tmp_path / "server.log") as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)
        assert [m.id for m in client.models.list().data] == ["my-alias"]
        assert client.models.retrieve("my-alias").id == "my-alias"
        reply = client.chat.completions.create(model="x", messages=[{"role": "user", "content": "hi there"}],
                                               max_tokens=2, temperature=0)
        assert reply.model == "my-alias"
        completion = client.completions.create(model="x", prompt="hello", max_tokens=2)
        assert completion.model == "my-alias"
        log = server.log
    counts = [int(n) for n in re.findall(r"prompt \((\d+) tokens\): ", log)]
    assert counts == [reply.usage.prompt_tokens, completion.usage.prompt_tokens]
    # The tokens detokenized, special ones included: what the model receives.
    assert re.search(r'prompt \(\d+ tokens\): "<s><start_of_turn> ?user\\nhi there<end_of_turn>', log), log


# -- --chat-template-file and -nr/--no-repack --------------------------------------------------------

TEMPLATE = "{% for m in messages %}<<{{ m.role }}:{{ m.content }}>>{% endfor %}{% if add_generation_prompt %}<<bot>>{% endif %}"


def test_chat_template_file_is_read_once_at_start(tmp_path: Path) -> None:
    (tmp_path / "t.jinja").write_text(TEMPLATE)
    assert settings("--chat-template-file", str(tmp_path / "t.jinja")).chat_template == TEMPLATE
    assert refusal("--chat-template", "chatml", "--chat-template-file", str(tmp_path / "t.jinja")) == \
        messages.CHAT_TEMPLATE_TWICE


def test_no_repack_and_repack_are_llama_cpp_switches() -> None:
    assert settings().no_repack is False
    assert settings("-nr").no_repack is True and settings("--no-repack").no_repack is True
    assert settings("-nr", "--repack").no_repack is False


@pytest.mark.slow
def test_chat_template_file_renders_the_chat(tiny_bundle: Path, tmp_path: Path) -> None:
    template = tmp_path / "template.jinja"
    template.write_text(TEMPLATE)
    result = complete(tiny_bundle, "--chat", "-n", "2", "-t", "1", "--verbose-prompt", "--chat-template-file",
                      str(template), input="hi\n", timeout=60)
    assert result.returncode == 0, result.stderr
    found = re.search(r"prompt \(\d+ tokens\): (.*)$", result.stderr, re.MULTILINE)
    assert found and json.loads(found.group(1)).endswith("<<user:hi>><<bot>>"), result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("content, reason", [(None, "No such file or directory"), (b"\xff\xfe", "not UTF-8 text"),
                                             (b" \n", "the file is empty")])
def test_an_unreadable_chat_template_file_is_one_line(tiny_bundle: Path, tmp_path: Path, content: bytes | None,
                                                      reason: str) -> None:
    path = tmp_path / "template.jinja"
    if content is not None:
        path.write_bytes(content)
    result = complete(tiny_bundle, "--cli", "-p", "hi", "--chat-template-file", str(path))
    assert result.returncode == 1
    assert one_error_line(result) == error_line(messages.CHAT_TEMPLATE_FILE_UNREADABLE.format(path=path, reason=reason))
