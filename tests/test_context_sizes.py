"""-c divided among -np sequences as llama-server divides it without --kv-unified (-no-kvu; one pool is
tests/test_kv_pool.py's): each gets -c/-np, honoured beyond the model's
training context with a warning, as llama.cpp honours it (and -c 0 gives each the training context); a
prompt that does not fit is refused with a message naming the per-sequence size and the flags that change it."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from llmpack.runtime.engine.context_size import ContextSize, describe_context
from llmpack.runtime.errors import ContextOverflow
from support.commands import one_error_line, run
from support.server_fixtures import running_server
from support.tiny_model import write_tiny_gguf

TRAINED = 1024  # the test model's training context
LONG_PROMPT = "the cat " * 600  # about 1200 tokens: more than any context below


@pytest.mark.parametrize("requested, n_seq, per_sequence", [
    (16384, 2, 8192),  # the case llama-server serves with 8192 each where capping the total gave 4096
    (8192, 2, 4096),
    (8192, 1, 8192),
    (32768, 1, 32768),  # beyond the training context: honoured (RoPE-scaled long-context use needs it)
    (32768, 2, 16384),
    (0, 4, 8192),
    (0, 1, 8192),
    (1000, 3, 333),
])
def test_each_sequence_gets_its_share_of_c(requested: int, n_seq: int,
                                                                     per_sequence: int) -> None:
    assert ContextSize(requested, n_seq, 8192).per_sequence() == per_sequence


def test_the_default_c_is_capped_at_the_training_context_and_a_given_one_is_not() -> None:
    default = ContextSize(8192, 4, 512, given=False)
    assert default.per_sequence() == 512 and default.capped() and not default.beyond_training()
    assert default.origin() == "-c 8192 (the default) divided among -np 4, capped at the model's training context of 512"
    given = ContextSize(8192, 4, 512)
    assert given.per_sequence() == 2048 and given.beyond_training() and not given.capped()
    assert ContextSize(1024, 4, 512, given=False).per_sequence() == 256  # within it: nothing to cap


def test_the_overflow_message_names_the_flags_that_change_the_context() -> None:
    split = str(ContextOverflow(5000, 4096, ContextSize(8192, 2, 8192)))
    assert split == ("the prompt is 5000 tokens but the context holds 4096 tokens per sequence "
                     "(-c 8192 divided among -np 2); shorten the prompt, raise -c or lower -np")
    alone = str(ContextOverflow(5000, 4096, ContextSize(4096, 1, 8192)))
    assert alone == "the prompt is 5000 tokens but the context holds 4096 tokens (-c 4096); shorten the prompt or raise -c"
    beyond = str(ContextOverflow(20000, 16384, ContextSize(32768, 2, 8192)))
    assert "(-c 32768 divided among -np 2, beyond the model's training context of 8192)" in beyond
    assert ContextSize(32768, 2, 8192).beyond_training() and not ContextSize(16384, 2, 8192).beyond_training()
    assert describe_context(4096, ContextSize(8192, 2, 8192)) == "4096 tokens per sequence (-c 8192 divided among -np 2)"
    assert describe_context(512, ContextSize(0, 1, 512)) == "512 tokens (-c 0: the model's training context)"


# -- end to end: the real executable, the real llama.cpp ---------------------------------------------


@pytest.fixture(scope="module")
def trained_1024(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("models") / "ctx1024.gguf", n_ctx=TRAINED)


def _served_context(server) -> int:
    return httpx.get(server.base_url + "/models", timeout=30).json()["data"][0]["meta"]["n_ctx"]


def _overflow(server) -> dict:
    response = httpx.post(server.base_url + "/completions", json={"prompt": LONG_PROMPT, "max_tokens": 4}, timeout=60)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code", "n_prompt_tokens", "n_ctx"}
    assert error["type"] == "exceed_context_size_error" and error["code"] == "context_length_exceeded"
    return error


@pytest.mark.slow
def test_c_above_the_training_context_is_honoured_with_a_warning(
        tiny_bundle: Path, trained_1024: Path, tmp_path: Path) -> None:
    # -c 4096 -np 2 on a model trained for 1024: 2048 each, as llama.cpp honours -c, with one warning line.
    with running_server(tiny_bundle, "-m", str(trained_1024), "-c", "4096", "-np", "2", "-no-kvu",
                        log_path=tmp_path / "server.log") as server:
        assert _served_context(server) == 2048
        long_prompt = "the cat " * 190  # about 1500 tokens: over the training context, within the share
        response = httpx.post(server.base_url + "/completions", json={"prompt": long_prompt, "max_tokens": 2},
                              timeout=120)
        assert response.status_code == 200, response.text
        assert response.json()["usage"]["prompt_tokens"] > TRAINED
        warnings = [line.split("warning: ", 1)[1] for line in server.log.splitlines() if "warning: " in line]
        assert [w for w in warnings if "training context" in w] == [  # one line: ours, not llama.cpp's too
            "-c gives each sequence 2048 tokens, beyond the model's training context of 1024: output may degrade "
            "past it (RoPE scaling such as YaRN extends a model that supports it)"], server.log
        assert "context 2048 tokens per sequence (-c 4096 divided among -np 2, beyond the model's training " \
               "context of 1024)" in server.log


@pytest.mark.slow
def test_without_c_each_sequence_gets_at_most_the_training_context(
        tiny_bundle: Path, trained_1024: Path, tmp_path: Path) -> None:
    # The default -c 8192 over -np 2 would give 4096 each to a model trained for 1024: capped, no warning.
    with running_server(tiny_bundle, "-m", str(trained_1024), "-np", "2", "-no-kvu", log_path=tmp_path / "server.log") as server:
        assert _served_context(server) == TRAINED
        assert "warning: " not in server.log
        assert "(-c 8192 (the default) divided among -np 2, capped at the model's training context of 1024)" in server.log


@pytest.mark.slow
def test_a_prompt_over_a_share_of_c_names_np(tiny_bundle: Path, trained_1024: Path, tmp_path: Path) -> None:
    with running_server(tiny_bundle, "-m", str(trained_1024), "-c", "1024", "-np", "2", "-no-kvu",
                        log_path=tmp_path / "server.log") as server:
        assert _served_context(server) == 512
        error = _overflow(server)
        assert error["n_ctx"] == 512
        assert error["message"] == (f"the prompt is {error['n_prompt_tokens']} tokens but the context holds 512 tokens "
                                    "per sequence (-c 1024 divided among -np 2); shorten the prompt, raise -c or lower -np")


@pytest.mark.slow
def test_c_0_gives_each_sequence_the_training_context(tiny_bundle: Path, trained_1024: Path, tmp_path: Path) -> None:
    with running_server(tiny_bundle, "-m", str(trained_1024), "-c", "0", "-np", "2",
                        log_path=tmp_path / "server.log") as server:
        assert _served_context(server) == TRAINED


@pytest.mark.slow
def test_cli_overflow_names_c(tiny_bundle: Path, trained_1024: Path) -> None:
    line = one_error_line(run([str(tiny_bundle), "-m", str(trained_1024), "--cli", "-c", "1024", "--log-disable",
                               "-p", LONG_PROMPT]))
    assert line.endswith("but the context holds 1024 tokens (-c 1024); shorten the prompt or raise -c"), line
