"""`llmpack build` on bad input: one clear line, non-zero exit, no output file left behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.commands import llmpack, one_error_line

pytestmark = pytest.mark.slow


def failed_build(*args: str) -> str:
    return one_error_line(llmpack("build", *args))


def test_missing_input(tmp_path: Path) -> None:
    line = failed_build(str(tmp_path / "absent.gguf"), "-o", str(tmp_path / "x.llmpack"))
    assert line == f"error: cannot read {tmp_path / 'absent.gguf'}: No such file or directory"
    assert not (tmp_path / "x.llmpack").exists()


def test_not_a_gguf(tmp_path: Path) -> None:
    text = tmp_path / "readme.gguf"
    text.write_text("hello")
    assert failed_build(str(text), "-o", str(tmp_path / "x.llmpack")) == f"error: {text} is not a GGUF model file"


def test_truncated_gguf(tiny_gguf: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_gguf.read_bytes()[:-1000])
    assert "is truncated" in failed_build(str(cut), "-o", str(tmp_path / "x.llmpack"))
    assert list(tmp_path.iterdir()) == [cut]


def test_unwritable_output(tiny_gguf: Path, tmp_path: Path) -> None:
    line = failed_build(str(tiny_gguf), "-o", str(tmp_path / "no" / "such" / "dir" / "x.llmpack"))
    assert line == f"error: cannot write {tmp_path / 'no/such/dir/x.llmpack'}: no directory {tmp_path / 'no/such/dir'}"


def test_bad_args_quoting(tiny_gguf: Path, tmp_path: Path) -> None:
    line = failed_build(str(tiny_gguf), "-o", str(tmp_path / "x.llmpack"), "--args", "-p 'unclosed")
    assert line == "error: --args: No closing quotation"


def test_output_defaults_to_the_gguf_name(tiny_gguf: Path, tmp_path: Path) -> None:
    copy = tmp_path / "model.gguf"
    copy.write_bytes(tiny_gguf.read_bytes())
    result = llmpack("build", str(copy), "-q")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "model.llmpack")
    assert (tmp_path / "model.llmpack").stat().st_mode & 0o111
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.gguf", "model.llmpack"]


@pytest.mark.parametrize("value", ["--server", "-c 512 --server"])
def test_args_value_may_start_with_a_dash(tiny_gguf: Path, tmp_path: Path, value: str) -> None:
    output = tmp_path / "served.llmpack"
    result = llmpack("build", str(tiny_gguf), "-o", str(output), "--args", value, "-q")
    assert result.returncode == 0, result.stderr
    manifest = json.loads(llmpack("inspect", str(output), "--json").stdout)["manifest"]
    assert manifest["default_args"] == value.split()


@pytest.mark.parametrize("command", [[], ["build"], ["repack"], ["runtime"], ["inspect"], ["unpack"]])
def test_every_help_has_examples(command: list[str]) -> None:
    result = llmpack(*command, "--help")
    assert result.returncode == 0, result.stderr
    _, examples = result.stdout.split("\nexamples:\n")
    lines = [line.strip() for line in examples.splitlines() if line.startswith("  ")]
    assert lines and all(line.startswith(("llmpack ", "./")) for line in lines), examples
    if command:
        assert any(line.startswith(f"llmpack {command[0]} ") for line in lines), examples
