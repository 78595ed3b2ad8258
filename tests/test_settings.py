"""Flag parsing, default-argument merging and the help page, without a model."""

from __future__ import annotations

import pytest
from llmpack.runtime import messages
from llmpack.runtime.errors import UsageError
from llmpack.runtime.flags.settings import option_fields, parse_args
from llmpack.runtime.flags.stored_args import merge_arguments

LLAMAFILE_FLAGS = ["--cli", "--chat", "--server", "-m", "--model", "-ngl", "--n-gpu-layers", "-c", "--ctx-size",
                   "-n", "--n-predict", "-p", "--prompt", "-f", "--file", "--temp", "--top-k", "--top-p",
                   "--min-p", "--repeat-penalty", "-s", "--seed", "-t", "--threads", "-b", "--batch-size",
                   "--no-mmap", "--mlock", "--chat-template", "--host", "--port", "--nobrowser", "--api-key",
                   "--log-disable", "--verbose", "--no-display-prompt"]


def test_every_llamafile_flag_is_in_the_schema() -> None:
    spelled = {flag for f in option_fields() for flag in f.metadata["flags"]}
    assert set(LLAMAFILE_FLAGS) <= spelled


def test_llamafile_defaults() -> None:
    settings = parse_args([]).settings
    assert settings.ctx_size == 8192
    assert settings.temperature("cli") == 0.8 and settings.temperature("chat") == 0.0
    assert (settings.host, settings.port) == ("127.0.0.1", 8080)
    assert settings.n_gpu_layers == -1 and settings.n_predict == -1  # llama.cpp's -ngl auto: the GPU when there is one


def test_values_are_parsed() -> None:
    settings = parse_args(["--cli", "-p", "hi", "-n", "32", "--temp", "0", "-ngl", "999", "-c", "0",
                           "--top-k", "5", "-s", "42", "--no-display-prompt"]).settings
    assert settings.mode == "cli"
    assert (settings.prompt, settings.n_predict, settings.temp, settings.n_gpu_layers) == ("hi", 32, 0.0, 999)
    assert (settings.ctx_size, settings.top_k, settings.seed, settings.no_display_prompt) == (0, 5, 42, True)


def test_later_flag_wins() -> None:
    assert parse_args(["-c", "1024", "-c", "2048"]).settings.ctx_size == 2048


@pytest.mark.parametrize("argv, fragment", [
    (["-c", "lots"], "-c/--ctx-size: expected an integer, got 'lots'"),
    (["--temp", "hot"], "--temp/--temperature: expected a number, got 'hot'"),
    (["--top-p", "1.5"], "--top-p: must be between 0.0 and 1.0, got 1.5"),
    (["-ngl", "-3"], "must be at least -1"),
    (["-sm", "rows"], "-sm/--split-mode"),
    (["--port", "70000"], "--port: must be between 0 and 65535"),
    (["--frobnicate"], messages.UNKNOWN_FLAG.format(arg="--frobnicate")),
    (["--cli", "--server"], messages.CONFLICTING_MODES),
    (["-c"], "expected one argument"),
])
def test_bad_values_are_one_clear_line(argv: list[str], fragment: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_args(argv)
    message = str(caught.value)
    assert fragment in message and "\n" not in message


@pytest.mark.parametrize("defaults, user, merged", [
    (["-c", "8192"], ["-p", "x"], ["-c", "8192", "-p", "x"]),
    (["-c", "8192", "...", "--nobrowser"], ["-p", "x"], ["-c", "8192", "-p", "x", "--nobrowser"]),
    (["..."], [], []),
    ([], ["--cli"], ["--cli"]),
])
def test_default_arguments_merge_like_llamafile(defaults, user, merged) -> None:
    assert merge_arguments(defaults, user) == merged


def test_user_arguments_override_defaults() -> None:
    assert parse_args(merge_arguments(["--temp", "0.7"], ["--temp", "0.1"])).settings.temp == 0.1


def test_the_model_is_named_by_its_file_or_its_aliases() -> None:
    """plan.model_names: -a's aliases (llama-server's: comma-separated, the first in sorted order is the
    id), else -m's file name, else the executable's, without the extension; --tags listed beside."""
    from llmpack.runtime.plan import model_names

    def names(argv: list[str], executable: str | None = None) -> tuple[tuple[str, ...], tuple[str, ...]]:
        found = model_names(parse_args(argv).settings, executable)
        return found.aliases, found.tags

    assert names([], "/opt/bin/smollm2-135m-instruct.llmpack") == (("smollm2-135m-instruct",), ())
    assert names([], "/opt/bin/gemma") == (("gemma",), ())  # no extension: the whole name
    assert names(["-m", "/w/model.Q4_K_M.gguf"], "/opt/x.llmpack") == (("model.Q4_K_M",), ())  # -m's weights
    assert names(["-a", "tinyllama-2, fim,code,", "--tags", "chat,fim"], "/opt/x.llmpack") == (
        ("code", "fim", "tinyllama-2"), ("chat", "fim"))
    assert model_names(parse_args(["-a", "b,a"]).settings).id("GGUF name") == "a"
    assert model_names(parse_args([]).settings).id("GGUF name") == "GGUF name"  # nothing else to go by


def test_llama_server_switches() -> None:
    assert (parse_args([]).settings.slots, parse_args([]).settings.no_ui) == (True, False)
    assert parse_args(["--no-slots", "--no-ui"]).settings.slots is False
    assert parse_args(["--no-ui"]).settings.no_ui is True


@pytest.mark.parametrize("given, meant", [
    ("ngram-simple", "ngram-simple"), ("ngram-map-k", "ngram-simple"), ("ngram-mod", "ngram-simple"),
    ("ngram-map-k4v,draft-simple", "ngram-simple,draft-simple"), ("draft-simple,ngram-cache", "ngram-simple,draft-simple"),
    ("draft-simple", "draft-simple"), ("none", "none")])
def test_llama_server_speculation_types_name_ours(given: str, meant: str) -> None:
    assert parse_args(["--spec-type", given]).settings.spec_type == meant


def test_an_unknown_speculation_type_is_one_line() -> None:
    with pytest.raises(UsageError, match="--spec-type"):
        parse_args(["--spec-type", "ngram-magic"])
