"""End to end, the real executable's `--chat` with messages piped in: the conversation is the user's
data (a message refused for its length loses nothing), and stdout carries the replies and nothing
else (command answers and notices go to stderr)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from llmpack.runtime import messages
from support.commands import run

pytestmark = pytest.mark.slow

QUIET = ["-t", "1", "--log-disable"]


def context_answers(text: str) -> list[tuple[int, int]]:
    """(tokens used, messages) of every /context answer in `text`."""
    return [(int(used), int(count)) for used, count in
            re.findall(r"^context: (\d+) / \d+ tokens used, \d+ free, (\d+) messages$", text, re.MULTILINE)]


def test_a_message_too_long_for_the_context_leaves_the_conversation_as_it_was(tiny_bundle: Path,
                                                                              tmp_path: Path) -> None:
    dump = tmp_path / "conversation.txt"
    too_long = "the cat " * 400  # 800 tokens, in a context of 512
    script = f"first question\nsecond question\n/context\n{too_long}\n/context\n/dump {dump}\n"
    result = run([str(tiny_bundle), "--chat", "-c", "512", "-n", "8", *QUIET], input=script, timeout=120)
    assert result.returncode == 0, result.stderr
    refused = messages.CHAT_MESSAGE_TOO_LONG.split("{n_tokens}")[0]
    assert sum(line.startswith(refused) for line in result.stderr.splitlines()) == 1, result.stderr
    before, after = context_answers(result.stderr)
    assert before[1] == 4 and after == before  # both exchanges, every token of them, still there
    transcript = dump.read_text()
    assert transcript.count("### user\n") == 2 and transcript.count("### assistant\n") == 2
    assert "### user\nfirst question\n" in transcript and "### user\nsecond question\n" in transcript
    assert "the cat the cat" not in transcript


def test_piped_chat_writes_only_replies_to_stdout_and_command_answers_to_stderr(tiny_bundle: Path,
                                                                                tmp_path: Path) -> None:
    argv = [str(tiny_bundle), "--chat", "-n", "8", *QUIET]
    plain = run(argv, input="hello\nand again\n", timeout=120)
    commands = "/help\n/stats\n/context\n/dump\n/push one\n/stack\n/system\n/nope\n"
    mixed = run(argv, input=f"hello\n{commands}and again\n{commands}", timeout=120)
    assert plain.returncode == 0 and mixed.returncode == 0, mixed.stderr
    assert plain.stdout.strip()
    # Greedy replies: the same conversation writes the same stdout, whatever commands ran in between.
    assert mixed.stdout == plain.stdout
    assert plain.stderr == ""
    for answer in ("/context  ", "prompt: ", "context: ", "### user\nhello", "saved point one",
                   "no system prompt", messages.CHAT_UNKNOWN_COMMAND.format(name="/nope")):
        assert answer in mixed.stderr, answer
