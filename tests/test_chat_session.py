"""The chat's logic without a terminal or a model: the conversation, token accounting and making room,
interruptible streaming, the slash commands and the reply renderer."""

from __future__ import annotations

import io
import os
import re
import signal
import threading
from typing import ClassVar

import pytest
from llmpack.runtime import messages
from llmpack.runtime.chat.commands import COMMANDS, CommandCompleter, run_command
from llmpack.runtime.chat.conversation import Conversation
from llmpack.runtime.chat.render import Console, ReplyRenderer, sanitize
from llmpack.runtime.chat.session import (
    ChatSession,
    DoesNotFit,
    stream_interruptibly,
)
from llmpack.runtime.formats.chat_template import formatter_for
from llmpack.runtime.engine.types import GenerationRequest, SamplingParams
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document
from support.chat_fakes import FakeEngine, make_session
from support.commands import error_line


def plain_console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(out, color=False), out


# -- the conversation --------------------------------------------------------------------------------

def conversation_of(*pairs: tuple[str, str], system: str | None = None) -> Conversation:
    conversation = Conversation(system)
    for role, content in pairs:
        conversation.add(role, content)
    return conversation


def test_undo_drops_the_last_exchange_and_clear_keeps_the_system_prompt() -> None:
    c = conversation_of(("user", "q1"), ("assistant", "a1"), ("user", "q2"), ("assistant", "a2"), system="sys")
    assert c.undo() == 2
    assert [m.content for m in c.messages] == ["q1", "a1"]
    assert c.clear() == 2 and c.messages == [] and c.system == "sys"
    assert c.undo() == 0


def test_undo_takes_an_upload_with_the_question_it_belongs_to() -> None:
    c = conversation_of(("user", "q1"), ("assistant", "a1"), ("user", "file"), ("user", "q2"), ("assistant", "a2"))
    assert c.undo() == 3
    assert [m.content for m in c.messages] == ["q1", "a1"]


def test_forget_drops_the_oldest_message_and_never_leaves_a_reply_first() -> None:
    c = conversation_of(("user", "q1"), ("assistant", "a1"), ("user", "q2"), system="sys")
    assert c.forget() == 2  # q1, and a1 which would otherwise open the conversation
    assert [m.content for m in c.messages] == ["q2"] and c.system == "sys"


def test_template_view_merges_consecutive_turns_and_puts_the_system_first() -> None:
    c = conversation_of(("user", "file"), ("user", "question"), ("assistant", "a"), system="sys")
    assert c.for_template() == [{"role": "system", "content": "sys"},
                                {"role": "user", "content": "file\n\nquestion"},
                                {"role": "assistant", "content": "a"}]


def test_push_and_pop_restore_messages_and_system_prompt() -> None:
    c = conversation_of(("user", "q1"), ("assistant", "a1"), system="one")
    c.push("before")
    c.add("user", "q2")
    c.system = "two"
    point = c.pop()
    assert point is not None and point.label == "before"
    assert [m.content for m in c.messages] == ["q1", "a1"] and c.system == "one"
    assert c.pop() is None


# -- the session: tokens, replies, room ----------------------------------------------------------------

def test_system_prompt_is_folded_into_the_first_turn_for_a_template_without_system_role() -> None:
    engine = FakeEngine(replies=["hello there"])
    session = make_session(engine, system="You are terse.")
    reply = session.ask("hi", lambda text: None)
    prompt = engine.detokenize(engine.requests[0].prompt_tokens)
    assert "<start_of_turn>user\nYou are terse.\n\nhi<end_of_turn>" in prompt
    assert prompt.endswith("<start_of_turn>model\n")
    assert engine.requests[0].stop == ("<end_of_turn>",)
    assert reply.text == "hello there" and reply.finish_reason == "stop"
    assert [m.role for m in session.conversation.messages] == ["user", "assistant"]


def test_a_model_without_a_template_chats_in_chatml_as_the_server_does() -> None:
    engine = FakeEngine(replies=["Paris."])
    formatter = formatter_for(None, engine.bos_token, engine.eos_token, None)
    assert formatter.fallback and formatter.description == messages.TEMPLATE_FALLBACK
    session = ChatSession(engine, formatter, SamplingParams(temperature=0.0), system="Facts:")
    session.ask("France?", lambda text: None)
    session.ask("Spain?", lambda text: None)
    assert engine.detokenize(engine.requests[1].prompt_tokens) == (
        "<|im_start|>system\nFacts:<|im_end|>\n<|im_start|>user\nFrance?<|im_end|>\n"
        "<|im_start|>assistant\nParis.<|im_end|>\n<|im_start|>user\nSpain?<|im_end|>\n<|im_start|>assistant\n")
    assert engine.requests[1].stop == ("<|im_end|>",)


def test_usage_counts_the_rendered_conversation() -> None:
    session = make_session()
    assert session.usage().used == 0
    session.ask("hi", lambda text: None)
    used = session.usage().used
    rendered = session.formatter.render(session.conversation.for_template(), add_generation_prompt=False)
    assert used == len(rendered) and session.usage().messages == 2
    session.conversation.undo()
    assert session.usage().used == 0


def test_a_full_context_drops_the_oldest_exchanges_and_says_how_many() -> None:
    engine = FakeEngine(n_ctx=400, replies=["x " * 40])
    session = make_session(engine, system="sys", n_predict=50)
    dropped: list[int] = []
    for i in range(8):
        session.ask(f"question number {i} " + "y" * 30, lambda text: None, dropped.append)
        assert len(engine.requests[-1].prompt_tokens) + session.reply_reserve() <= engine.n_ctx
    assert dropped and all(n >= 2 for n in dropped)
    assert session.conversation.system == "sys"
    assert session.conversation.messages[-2].content.startswith("question number 7")


def test_a_message_that_cannot_fit_is_refused_and_not_kept() -> None:
    session = make_session(FakeEngine(n_ctx=100))
    with pytest.raises(DoesNotFit) as refused:
        session.ask("z" * 200, lambda text: None)
    assert str(refused.value).startswith("context full:")
    assert session.conversation.messages == []


def test_a_refused_message_leaves_the_conversation_exactly_as_it_was() -> None:
    # Two exchanges fill most of the context; the long message would need the oldest dropped, and
    # then still does not fit: nothing may be lost on the way to finding that out.
    engine = FakeEngine(n_ctx=400, replies=["a short reply"])
    session = make_session(engine, system="sys", n_predict=20)
    session.ask("first question " + "x" * 40, lambda text: None)
    session.ask("second question " + "y" * 40, lambda text: None)
    before = list(session.conversation.messages)
    used = session.usage()
    assert len(before) == 4
    with pytest.raises(DoesNotFit):
        session.ask("z" * 390, lambda text: None)
    assert session.conversation.messages == before and session.conversation.system == "sys"
    assert session.usage() == used
    assert session.conversation.transcript().count("### user") == 2
    # And the chat goes on where it was: the next message is answered with both exchanges.
    session.ask("third", lambda text: None)
    assert [m.content for m in session.conversation.messages][:4] == [m.content for m in before]


def test_a_message_that_fails_to_generate_gives_back_the_turns_dropped_for_it() -> None:
    class Failing(FakeEngine):
        fail = False

        def generate(self, request, cancel=None):
            if self.fail:
                raise RuntimeError("decode failed")
            yield from super().generate(request, cancel)

    engine = Failing(n_ctx=360, replies=["a short reply"])
    session = make_session(engine, n_predict=20)
    session.ask("first " + "x" * 50, lambda text: None)
    session.ask("second " + "y" * 50, lambda text: None)
    before = list(session.conversation.messages)
    engine.fail = True
    with pytest.raises(RuntimeError):
        session.ask("third " + "w" * 60, lambda text: None)  # room is made (an exchange dropped), then it fails
    assert session.conversation.messages == before


def test_a_reply_cut_by_the_context_is_reported_as_full() -> None:
    engine = FakeEngine(n_ctx=90, replies=["w " * 100])
    reply = make_session(engine).ask("hi", lambda text: None)
    assert reply.finish_reason == "full"


def test_ctrl_c_while_streaming_cancels_and_keeps_what_was_said() -> None:
    engine = FakeEngine(replies=[" ".join(f"w{i}" for i in range(200))], delay=0.002)
    session = make_session(engine)
    seen: list[str] = []

    def on_text(text: str) -> None:
        seen.append(text)
        if len(seen) == 5:
            raise KeyboardInterrupt  # what SIGINT does in the main thread

    reply = session.ask("go", on_text)
    assert reply.finish_reason == "cancelled"
    assert 5 <= len(reply.text.split()) < 200
    assert session.conversation.messages[-1].content == reply.text


def test_a_real_sigint_while_streaming_cancels_without_an_exception() -> None:
    engine = FakeEngine(replies=[" ".join(f"w{i}" for i in range(200))], delay=0.002)
    session = make_session(engine)
    seen: list[str] = []

    def on_text(text: str) -> None:
        seen.append(text)
        if len(seen) == 5:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, as the terminal sends it

    reply = session.ask("go", on_text)
    assert reply.finish_reason == "cancelled" and 5 <= len(reply.text.split()) < 200
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored afterwards


def test_a_failing_output_stops_the_generation_before_raising() -> None:
    engine = FakeEngine(replies=[" ".join(f"w{i}" for i in range(500))], delay=0.001)
    session = make_session(engine)

    def on_text(text: str) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    with pytest.raises(BrokenPipeError):
        session.ask("go", on_text)
    assert not [t for t in threading.enumerate() if t.name == "chat-generate"]  # the worker is done


def test_an_engine_error_is_raised_in_the_caller_and_takes_the_message_back() -> None:
    class Failing(FakeEngine):
        def generate(self, request, cancel=None):
            raise RuntimeError("boom")
            yield

    session = make_session(Failing())
    with pytest.raises(RuntimeError, match="boom"):
        session.ask("hi", lambda text: None)
    assert session.conversation.messages == []


def test_stream_returns_the_last_piece_with_timings() -> None:
    engine = FakeEngine(replies=["one two three"])
    request = GenerationRequest((1, 2, 3), 2)
    texts: list[str] = []
    last = stream_interruptibly(engine, request, lambda piece: texts.append(piece.text))
    assert "".join(texts) == "one two" and last.finish_reason == "length"
    assert last.timings is not None and last.timings.generated_tokens == 2
    assert threading.active_count() >= 1


# -- commands ------------------------------------------------------------------------------------------

def run(line: str, session) -> str:
    console, out = plain_console()
    assert run_command(line, session, console) is False
    return out.getvalue()


def test_help_lists_every_command_with_one_line_each() -> None:
    text = run("/help", make_session())
    for name, command in COMMANDS.items():
        assert re.search(rf"^/{name}\b.*{re.escape(command.help)}$", text, re.MULTILINE), name
    assert run("/help undo", make_session()).strip() == f"/undo: {COMMANDS['undo'].help}"
    assert "unknown command /nope" in run("/help nope", make_session())


def test_exit_ends_and_unknown_commands_do_not() -> None:
    console, out = plain_console()
    assert run_command("/exit", make_session(), console) is True
    assert run_command("/frobnicate", make_session(), console) is False
    assert messages.CHAT_UNKNOWN_COMMAND.format(name="/frobnicate") in out.getvalue()


def test_context_stats_undo_clear_through_commands() -> None:
    session = make_session(system="sys")
    assert run("/stats", session).strip() == messages.CHAT_NO_STATS
    session.ask("hello", lambda text: None)
    before = int(re.search(r"context: (\d+) /", run("/context", session)).group(1))
    assert "generation: 2 tokens" in run("/stats", session)
    assert run("/undo", session).strip() == messages.CHAT_UNDONE.format(n=2)
    after = int(re.search(r"context: (\d+) /", run("/context", session)).group(1))
    assert 0 < after < before  # the system prompt still counts
    session.ask("again", lambda text: None)
    run("/clear", session)
    assert int(re.search(r"context: (\d+) /", run("/context", session)).group(1)) == after


def test_dump_writes_the_transcript(tmp_path) -> None:
    session = make_session(system="be brief")
    session.ask("hi", lambda text: None)
    target = tmp_path / "chat.txt"
    assert run(f"/dump {target}", session).strip() == messages.CHAT_DUMPED.format(n=2, path=target)
    assert target.read_text() == "### system\nbe brief\n\n### user\nhi\n\n### assistant\na reply\n"
    assert "### user\nhi" in run("/dump", session)
    assert run(f"/dump {tmp_path}/missing/x.txt", session).startswith("error: cannot write")


def test_upload_adds_a_text_file_and_refuses_others(tmp_path) -> None:
    session = make_session()
    notes = tmp_path / "notes.txt"
    notes.write_text("the answer is 42\n")
    assert run(f"/upload {notes}", session).startswith(f"added {notes}")
    session.ask("what is the answer?", lambda text: None)
    prompt = session.engine.detokenize(session.engine.requests[0].prompt_tokens)
    assert "notes.txt:\n```\nthe answer is 42\n```\n\nwhat is the answer?" in prompt
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"\x00\xff\x00")
    assert run(f"/upload {binary}", session).strip() == error_line(messages.CHAT_NOT_TEXT.format(path=binary))
    assert run(f"/upload {tmp_path}/absent", session).startswith("error: cannot read")
    assert run("/upload", session).strip() == messages.CHAT_UPLOAD_USAGE
    big = tmp_path / "big.txt"
    big.write_text("w" * 5000)  # the fake engine's context: 4096 tokens, one per character
    assert run(f"/upload {big}", session).startswith(f"error: {big} is 5000 tokens, too long")
    assert len(session.conversation) == 3  # the notes, the question, the reply: nothing more


def test_system_shows_replaces_and_removes() -> None:
    session = make_session()
    assert run("/system", session).strip() == messages.CHAT_NO_SYSTEM
    run("/system Answer in French.", session)
    assert run("/system", session).strip() == "system prompt: Answer in French."
    run("/system -", session)
    assert session.conversation.system is None


def test_push_pop_stack_commands() -> None:
    session = make_session()
    assert run("/stack", session).strip() == messages.CHAT_STACK_EMPTY
    session.ask("one", lambda text: None)
    run("/push first", session)
    session.ask("two", lambda text: None)
    assert "first: 2 messages" in run("/stack", session)
    assert run("/pop", session).strip() == messages.CHAT_POPPED.format(label="first", n=2)
    assert len(session.conversation) == 2


def completions(text: str) -> list[str]:
    return [c.text for c in CommandCompleter().get_completions(Document(text), CompleteEvent(completion_requested=True))]


def test_tab_completes_commands_command_names_and_paths(tmp_path) -> None:
    assert completions("/") == ["/" + name for name in COMMANDS]
    assert completions("/st") == ["/stats", "/stack"]
    assert completions("/help u") == ["undo", "upload"]
    (tmp_path / "notes.txt").write_text("x")
    assert completions(f"/upload {tmp_path}/no") == ["tes.txt"]
    assert completions("hello /") == []


# -- rendering -----------------------------------------------------------------------------------------

class Recorder(Console):
    """A colour console that records what would be styled."""

    def __init__(self) -> None:
        super().__init__(io.StringIO(), color=True, output=object())
        self.parts: list[tuple[str, str]] = []

    def write(self, text: str) -> None:
        self.parts.append(("", sanitize(text)))

    def styled(self, fragments) -> None:
        self.parts += [(style, sanitize(text)) for style, text in fragments]


def render(chunks: list[str]) -> list[tuple[str, str]]:
    console = Recorder()
    renderer = ReplyRenderer(console)
    for chunk in chunks:
        renderer.feed(chunk)
    renderer.finish()
    return console.parts


def test_code_blocks_are_highlighted_and_text_streams_as_is() -> None:
    reply = "Here:\n```python\ndef f(x):\n    return 'hi'  # done\n```\nBye."
    chunks = [reply[i:i + 3] for i in range(0, len(reply), 3)]
    parts = render(chunks)
    assert "".join(text for _, text in parts) == reply
    assert ("class:pygments.keyword", "def") in parts
    assert any(style.startswith("class:pygments.literal.string") for style, _ in parts)
    assert any(style.startswith("class:pygments.comment") for style, _ in parts)
    assert [t for s, t in parts if s == "class:fence"] == ["```python\n", "```\n"]
    # Prose before the block streamed in pieces, not held to the end.
    assert ("", "Her") in parts


def test_multi_line_strings_keep_their_highlighting_across_lines() -> None:
    parts = render(['```python\nx = """one\n', 'two\n', '"""\n```\n'])
    two = [style for style, text in parts if "two" in text]
    assert two and all("string" in style for style in two)


def test_unknown_language_and_unterminated_block_still_render_all_text() -> None:
    reply = "```nosuchlang\nsome code\nmore"
    assert "".join(t for _, t in render([reply])) == reply


def test_plain_console_writes_everything_as_it_comes_and_drops_control_characters() -> None:
    console, out = plain_console()
    renderer = ReplyRenderer(console)
    renderer.feed("```py\nx = 1")
    assert out.getvalue() == "```py\nx = 1"  # no colour: nothing held back
    renderer.feed("\x1b[2J\x07 ok\r\n")
    renderer.finish()
    assert out.getvalue() == "```py\nx = 1[2J ok\n"


def test_colour_is_off_with_no_color_or_without_a_terminal(monkeypatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    assert Console(Tty(), output=object()).color is True
    assert Console(io.StringIO()).color is False
    monkeypatch.setenv("NO_COLOR", "1")
    assert Console(Tty(), output=object()).color is False


# -- the banner ----------------------------------------------------------------------------------------

class BannerEngine:
    model_name = "tiny"
    n_ctx = 2048
    metadata: ClassVar[dict[str, str]] = {"general.architecture": "llama", "llama.block_count": "24"}


def test_banner_names_model_context_compute_and_server(monkeypatch) -> None:
    from llmpack.runtime.chat import mode as chat_mode
    from llmpack.runtime.flags.settings import parse_args

    monkeypatch.setattr(chat_mode, "gpu_offload_supported", lambda: False)
    lines = chat_mode.banner_lines(parse_args(["-t", "3"]).settings, BannerEngine(), "http://127.0.0.1:8080/")
    assert lines[1:] == ["model:    tiny", "context:  2048 tokens", "compute:  3 CPU threads",
                         "server:   http://127.0.0.1:8080/", f"parallel: {messages.CHAT_PARALLEL.format(n=4)}"]
    untemplated = formatter_for(None, "", "", None)
    alone = chat_mode.banner_lines(parse_args(["-t", "1"]).settings, BannerEngine(), None, untemplated)
    assert f"template: {messages.TEMPLATE_FALLBACK}" in alone
    assert not any(l.startswith(("server:", "parallel:")) for l in alone)
    assert "compute:  1 CPU thread" in alone
    own = formatter_for("{{ messages }}", "", "", None)
    served = chat_mode.banner_lines(parse_args(["-np", "3"]).settings, BannerEngine(), "http://h/", own)
    assert "template: the model's own" in served
    assert f"parallel: {messages.CHAT_PARALLEL.format(n=3)}" in served

    monkeypatch.setattr(chat_mode, "gpu_offload_supported", lambda: True)
    monkeypatch.setattr(chat_mode, "load_backends", lambda: ["CPU", "CUDA0"])
    gpu = chat_mode.describe_compute(parse_args(["-ngl", "999", "-t", "2"]).settings, BannerEngine())
    assert gpu == "CUDA0 (all layers), 2 CPU threads"
    assert chat_mode.describe_compute(parse_args(["-ngl", "10", "-t", "2"]).settings, BannerEngine()) == \
        "CUDA0 (10 layers), 2 CPU threads"
