"""End to end: a real executable built from the tiny GGUF, run in --cli mode as a shell script would."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from llmpack.runtime import messages
from support.commands import build_bundle, error_line, llmpack, one_error_line, run

pytestmark = pytest.mark.slow
GREEDY = ["--cli", "-n", "24", "--temp", "0", "--log-disable"]


def complete(bundle: Path, *args: str, **kwargs):
    return run([str(bundle), *args], **kwargs)


def test_completion_is_prompt_then_text_and_reproducible(tiny_bundle: Path) -> None:
    first = complete(tiny_bundle, *GREEDY, "-p", "four score and seven")
    second = complete(tiny_bundle, *GREEDY, "-p", "four score and seven")
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("four score and seven")
    assert len(first.stdout) > len("four score and seven")
    assert first.stdout == second.stdout
    assert first.stderr == ""  # --log-disable: nothing on stderr


def test_same_seed_same_bytes_when_sampling(tiny_bundle: Path) -> None:
    args = ["--cli", "-n", "24", "--temp", "1.0", "-s", "1234", "--log-disable", "-p", "hello"]
    assert complete(tiny_bundle, *args).stdout == complete(tiny_bundle, *args).stdout


def test_logs_go_to_stderr_and_stdout_carries_only_text(tiny_bundle: Path) -> None:
    quiet = complete(tiny_bundle, *GREEDY, "-p", "hello")
    loud = complete(tiny_bundle, "--cli", "-n", "24", "--temp", "0", "-p", "hello")
    assert loud.returncode == 0
    assert loud.stdout == quiet.stdout
    assert "loading model" in loud.stderr and "tokens in" in loud.stderr


def test_no_display_prompt(tiny_bundle: Path) -> None:
    shown = complete(tiny_bundle, *GREEDY, "-p", "hello world")
    hidden = complete(tiny_bundle, *GREEDY, "-p", "hello world", "--no-display-prompt")
    assert hidden.returncode == 0
    assert shown.stdout == "hello world" + hidden.stdout


def test_n_predict_limits_the_tokens(tiny_bundle: Path) -> None:
    short = complete(tiny_bundle, "--cli", "-n", "3", "--temp", "0", "-p", "hello")
    longer = complete(tiny_bundle, *GREEDY, "-p", "hello")
    assert short.returncode == 0
    assert longer.stdout.startswith(short.stdout) and len(short.stdout) < len(longer.stdout)
    assert "3 tokens in" in short.stderr


def test_prompt_from_file_and_stdin(tiny_bundle: Path, tmp_path: Path) -> None:
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("the cat and the dog")
    from_flag = complete(tiny_bundle, *GREEDY, "-p", "the cat and the dog")
    from_file = complete(tiny_bundle, *GREEDY, "-f", str(prompt))
    from_stdin = complete(tiny_bundle, *GREEDY, "-f", "-", input="the cat and the dog")
    assert from_flag.stdout == from_file.stdout == from_stdin.stdout
    assert from_file.returncode == 0 and from_stdin.returncode == 0


def test_a_prompt_without_a_mode_means_cli(tiny_bundle: Path) -> None:
    implicit = complete(tiny_bundle, "-n", "8", "--temp", "0", "--log-disable", "-p", "yes")
    explicit = complete(tiny_bundle, "--cli", "-n", "8", "--temp", "0", "--log-disable", "-p", "yes")
    assert implicit.returncode == 0 and implicit.stdout == explicit.stdout


def test_embedded_weights_load_in_place_like_a_path_load(tiny_bundle: Path, tiny_gguf: Path) -> None:
    """The executable reads the GGUF from inside itself (FILE* at an offset); the same weights loaded
    from a loose file by `llmpack run` give the same tokens."""
    bundled = complete(tiny_bundle, *GREEDY, "-p", "the model")
    loose = llmpack("run", "-m", str(tiny_gguf), *GREEDY, "-p", "the model")
    assert loose.returncode == 0, loose.stderr
    assert bundled.stdout == loose.stdout


def test_dash_m_overrides_the_embedded_weights(tiny_bundle: Path, other_gguf: Path) -> None:
    embedded = complete(tiny_bundle, *GREEDY, "-p", "the model")
    other = complete(tiny_bundle, *GREEDY, "-p", "the model", "-m", str(other_gguf))
    other_loose = llmpack("run", "-m", str(other_gguf), *GREEDY, "-p", "the model")
    assert other.returncode == 0, other.stderr
    assert other.stdout == other_loose.stdout != embedded.stdout


def test_default_arguments_apply_and_user_arguments_win(tiny_gguf: Path, tmp_path: Path) -> None:
    bundle = build_bundle(tiny_gguf, tmp_path / "defaults.llmpack", "--args", "--cli -n 4 --temp 0 ... --log-disable")
    by_default = run([str(bundle), "-p", "hello"])
    expected = llmpack("run", "-m", str(tiny_gguf), "--cli", "-n", "4", "--temp", "0", "--log-disable", "-p", "hello")
    assert by_default.returncode == 0, by_default.stderr
    assert by_default.stdout == expected.stdout and by_default.stderr == ""
    overridden = run([str(bundle), "-p", "hello", "-n", "2"])
    expected = llmpack("run", "-m", str(tiny_gguf), "--cli", "-n", "2", "--temp", "0", "--log-disable", "-p", "hello")
    assert overridden.returncode == 0
    assert overridden.stdout == expected.stdout != by_default.stdout


def test_bad_default_arguments_fail_the_build(tiny_gguf: Path, tmp_path: Path) -> None:
    result = llmpack("build", str(tiny_gguf), "-o", str(tmp_path / "bad.llmpack"), "--args", "-c many")
    assert result.returncode != 0
    assert "default arguments were rejected" in result.stderr and "-c/--ctx-size" in result.stderr
    assert not (tmp_path / "bad.llmpack").exists()


def test_missing_model(tiny_bundle: Path, tmp_path: Path) -> None:
    line = one_error_line(complete(tiny_bundle, *GREEDY, "-p", "x", "-m", str(tmp_path / "nope.gguf")))
    assert line == error_line(messages.MODEL_UNREADABLE.format(path=tmp_path / "nope.gguf", reason="No such file or directory"))


def test_not_a_gguf(tiny_bundle: Path, tmp_path: Path) -> None:
    fake = tmp_path / "fake.gguf"
    fake.write_text("definitely not weights")
    assert one_error_line(complete(tiny_bundle, *GREEDY, "-p", "x", "-m", str(fake))) == \
        error_line(messages.NOT_A_GGUF.format(path=fake))


def test_damaged_gguf_that_llama_cpp_rejects(tiny_bundle: Path, tiny_gguf: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_gguf.read_bytes()[:5000])
    assert one_error_line(complete(tiny_bundle, *GREEDY, "-p", "x", "-m", str(cut))) == \
        error_line(messages.MODEL_LOAD_FAILED.format(path=cut))


@pytest.mark.parametrize("args, expected", [
    (["-c", "big"], "error: -c/--ctx-size: expected an integer, got 'big'"),
    (["--temp", "-1"], "error: --temp/--temperature: must be at least 0.0, got -1"),
    (["--bogus"], error_line(messages.UNKNOWN_FLAG.format(arg="--bogus"))),
])
def test_bad_flag_values(tiny_bundle: Path, args: list[str], expected: str) -> None:
    result = complete(tiny_bundle, "--cli", "-p", "x", *args)
    assert one_error_line(result) == expected
    assert result.returncode == 2


def test_missing_prompt(tiny_bundle: Path) -> None:
    assert one_error_line(complete(tiny_bundle, "--cli")) == error_line(messages.NO_PROMPT)


def test_prompt_file_missing(tiny_bundle: Path, tmp_path: Path) -> None:
    line = one_error_line(complete(tiny_bundle, "--cli", "-f", str(tmp_path / "none.txt")))
    assert line.startswith("error: cannot read prompt file")


def test_prompt_longer_than_the_context(tiny_bundle: Path) -> None:
    line = one_error_line(complete(tiny_bundle, "--cli", "-c", "256", "-p", "the cat " * 100, "--log-disable"))
    assert line.startswith("error: the prompt is ") and "the context holds 256" in line


def test_gpu_layers_on_a_cpu_build_warn_once_and_run(tiny_bundle: Path) -> None:
    result = complete(tiny_bundle, "--cli", "-n", "4", "--temp", "0", "-p", "hi", "-ngl", "99")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("warning: -ngl 99") == 1


def test_help_is_a_man_page_listing_every_flag(tiny_bundle: Path) -> None:
    from llmpack.runtime.flags.settings import option_fields

    result = complete(tiny_bundle, "--help")
    assert result.returncode == 0
    for section in ("NAME", "SYNOPSIS", "OPTIONS", "EXAMPLES", "EXIT STATUS"):
        assert section in result.stdout
    for f in option_fields():
        for flag in f.metadata["flags"]:
            assert flag in result.stdout
    assert "[default: 8192]" in result.stdout  # -c's default
    assert "tiny-test-model" in result.stdout


def test_version(tiny_bundle: Path) -> None:
    result = complete(tiny_bundle, "--version")
    assert result.returncode == 0 and result.stdout.startswith("llmpack ")


def test_inspect_unpack_and_verify(tiny_bundle: Path, tiny_gguf: Path, tmp_path: Path) -> None:
    described = llmpack("inspect", str(tiny_bundle), "--json")
    assert described.returncode == 0, described.stderr
    info = json.loads(described.stdout)
    expected_sha = hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()
    assert info["gguf_sha256"] == expected_sha == info["manifest"]["model"]["sha256"]
    assert info["gguf_offset"] % 65536 == 0 and info["gguf_length"] == tiny_gguf.stat().st_size
    assert info["manifest"]["model"]["name"] == "tiny-test-model"
    assert info["manifest"]["model"]["quantization"] == "F32"
    human = llmpack("inspect", str(tiny_bundle))
    assert "tiny-test-model" in human.stdout and expected_sha in human.stdout
    verified = llmpack("inspect", str(tiny_bundle), "--verify", "--json")
    assert verified.returncode == 0 and json.loads(verified.stdout)["verified"] is True
    out = tmp_path / "back.gguf"
    unpacked = llmpack("unpack", str(tiny_bundle), "-o", str(out))
    assert unpacked.returncode == 0, unpacked.stderr
    assert out.read_bytes() == tiny_gguf.read_bytes()
