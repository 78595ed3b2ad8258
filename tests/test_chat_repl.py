"""The chat loop through prompt_toolkit's own test kit: keys go in through a pipe input, the screen is a
DummyOutput, and the chat's output is captured. The model is the fake engine (chat_fakes)."""

from __future__ import annotations

import io
import re
import sys
import threading
from pathlib import Path

import pytest
from llmpack.runtime import messages
from llmpack.runtime.__main__ import pick_mode
from llmpack.runtime.chat.render import Console
from llmpack.runtime.chat.repl import (
    Repl,
    make_history,
    make_prompt_session,
    read_messages,
    unquote_block,
)
from llmpack.runtime.flags.settings import parse_args
from prompt_toolkit.history import FileHistory, InMemoryHistory
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput
from support.chat_fakes import FakeEngine, make_session

UP, CTRL_C, CTRL_D, CTRL_J, CTRL_R, ESC_ENTER, TAB = "\x1b[A", "\x03", "\x04", "\n", "\x12", "\x1b\r", "\t"


def chat(keys: str, session=None, history=None, later: str = "") -> tuple[int, str, object]:
    """Types `keys` into a chat (and `later` half a second later) and returns (exit code, what the
    chat wrote, the session)."""
    session = session or make_session()
    out = io.StringIO()
    with create_pipe_input() as pipe:
        pipe.send_text(keys)
        if later:
            # Completion runs as a background task: keys sent at once would overtake it.
            threading.Timer(0.5, pipe.send_text, [later]).start()
        prompt = make_prompt_session(history if history is not None else InMemoryHistory(),
                                     input=pipe, output=DummyOutput())
        code = Repl(session, Console(out, color=False)).run(prompt)
    return code, out.getvalue(), session


def user_messages(session) -> list[str]:
    return [m.content for m in session.conversation.messages if m.role == "user"]


def test_a_message_gets_a_streamed_reply_and_exit_ends_with_0() -> None:
    code, out, session = chat("hello\r/context\r/exit\r", make_session(FakeEngine(replies=["hi there friend"])))
    assert code == 0
    assert out.startswith("hi there friend\n")
    assert re.search(r"^context: \d+ / 4096 tokens used, \d+ free, 2 messages$", out, re.MULTILINE)
    assert user_messages(session) == ["hello"]


@pytest.mark.parametrize("key", [CTRL_D, CTRL_C])
def test_ctrl_d_or_ctrl_c_on_an_empty_prompt_exits_cleanly(key: str) -> None:
    code, _, session = chat("hello\r", later=key)  # later: a Ctrl-C typed with Enter stops the reply
    assert code == 0 and user_messages(session) == ["hello"]


def test_ctrl_c_typed_right_after_enter_stops_that_message_not_the_chat() -> None:
    code, out, session = chat("hello\r" + CTRL_C + "next\r" + CTRL_D)
    assert code == 0
    assert out.startswith(messages.CHAT_INTERRUPTED + "\n")
    assert user_messages(session) == ["next"]


def test_ctrl_c_with_text_drops_the_line_and_stays() -> None:
    code, _, session = chat("half typed" + CTRL_C + "hello\r" + CTRL_D)
    assert code == 0 and user_messages(session) == ["hello"]


def test_multi_line_input_with_esc_enter_ctrl_j_and_triple_quotes() -> None:
    keys = ("one" + ESC_ENTER + "two\r"
            + "three" + CTRL_J + "four\r"
            + '"""\rfive\r\rsix\r"""\r'
            + CTRL_D)
    _, _, session = chat(keys)
    assert user_messages(session) == ["one\ntwo", "three\nfour", "five\n\nsix"]


def test_tab_completes_a_command() -> None:
    _, out, _ = chat("/cont" + TAB, later="\r" + CTRL_D)
    assert out.startswith("context: 0 / 4096")


def test_history_persists_across_runs_with_up_arrow_and_ctrl_r(tmp_path: Path) -> None:
    path = tmp_path / "history"
    chat("first question\rsecond question\r" + CTRL_D, history=FileHistory(str(path)))
    assert "+first question" in path.read_text()
    # A new chat: up-arrow recalls the last message; Ctrl-R finds an older one. (The history loads
    # in the background when a prompt starts: keys typed at once would search it before it is there.)
    _, _, session = chat(UP + "\r", history=FileHistory(str(path)), later=CTRL_R + "first" + "\r\r" + CTRL_D)
    assert user_messages(session) == ["second question", "first question"]


def test_history_file_comes_from_the_environment_and_a_bad_path_does_not_stop_the_chat(
        tmp_path: Path, monkeypatch, caplog) -> None:
    monkeypatch.setenv("LLMPACK_HISTORY", str(tmp_path / "sub" / "hist"))
    assert isinstance(make_history(), FileHistory)
    assert (tmp_path / "sub" / "hist").exists()
    monkeypatch.setenv("LLMPACK_HISTORY", str(tmp_path))  # a directory cannot be a history file
    history = make_history()
    assert isinstance(history, InMemoryHistory)
    assert "cannot use the history file" in caplog.text


def test_a_failed_turn_is_one_line_and_the_chat_goes_on() -> None:
    session = make_session(FakeEngine(n_ctx=80))
    code, out, session = chat("z" * 300 + "\rhi\r" + CTRL_D, session)
    assert code == 0
    assert out.splitlines()[0].startswith("context full: this message needs")
    assert user_messages(session) == ["hi"]


def test_context_full_drops_old_turns_and_says_so() -> None:
    session = make_session(FakeEngine(n_ctx=300, replies=["r " * 30]), n_predict=40)
    _, out, _ = chat("".join(f"question {i} {'q' * 40}\r" for i in range(5)) + CTRL_D, session)
    assert re.search(r"^context full: dropped the \d+ oldest messages to make room", out, re.MULTILINE)


def test_piped_messages_are_read_line_by_line_and_blocks_whole() -> None:
    lines = ["hello\n", '"""\n', "a\n", "b\n", '"""\n', "/exit\n", "never read\n"]
    assert list(read_messages(lines))[:2] == ["hello", '"""\na\nb\n"""']
    assert unquote_block('"""\na\nb\n"""') == "a\nb"
    session = make_session()
    out = io.StringIO()
    assert Repl(session, Console(out, color=False)).run_lines(lines) == 0
    assert user_messages(session) == ["hello", "a\nb"]


def test_no_mode_flag_without_a_terminal_serves_instead_of_waiting_for_keys(monkeypatch) -> None:
    class Stdin(io.StringIO):
        def __init__(self, tty: bool) -> None:
            super().__init__()
            self.tty = tty

        def isatty(self) -> bool:
            return self.tty

    settings = parse_args([]).settings
    monkeypatch.setattr(sys, "stdin", Stdin(False))
    assert pick_mode(settings) == "server"
    assert pick_mode(parse_args(["-p", "hi"]).settings) == "cli"
    assert pick_mode(parse_args(["--chat"]).settings) == "chat"
    monkeypatch.setattr(sys, "stdin", Stdin(True))
    assert pick_mode(settings) == "default"
    assert messages.CHAT_NEEDS_TERMINAL.startswith("stdin is not a terminal")


def test_piped_chat_keeps_command_answers_and_notices_off_the_replies_stream() -> None:
    session = make_session(FakeEngine(n_ctx=400, replies=["first reply", "second reply"]), n_predict=20)
    out, notes = io.StringIO(), io.StringIO()
    lines = ["hello\n", "/context\n", "/stats\n", "/dump\n", "/help\n", "/nope\n", "z" * 500 + "\n", "again\n"]
    assert Repl(session, Console(out, color=False, notes=notes)).run_lines(lines) == 0
    assert out.getvalue() == "first reply\nsecond reply\n"
    told = notes.getvalue()
    assert re.search(r"^context: \d+ / 400 tokens used, \d+ free, 2 messages$", told, re.MULTILINE)
    assert "### user\nhello\n" in told and "prompt: " in told and "/context" in told
    assert messages.CHAT_UNKNOWN_COMMAND.format(name="/nope") in told
    assert "context full: this message needs" in told
