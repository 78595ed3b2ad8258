"""The chat loop. On a terminal: a prompt_toolkit prompt with history (up-arrow, Ctrl-R), tab
completion, multi-line input (Esc-Enter, Ctrl-J, or a block between triple quotes) and Ctrl-C/Ctrl-D
handling. Without one (`--chat` with stdin from a pipe or a file): messages are read line by line,
so a script can chat, and the chat ends at the end of its input instead of waiting for keys."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from prompt_toolkit import PromptSession
from prompt_toolkit.auto_suggest import AutoSuggestFromHistory
from prompt_toolkit.filters import is_searching
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.input import Input
from prompt_toolkit.input.typeahead import get_typeahead, store_typeahead
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.keys import Keys

from .. import messages
from ..errors import UserError, user_line
from .attach import attach_dropped
from .commands import CommandCompleter, is_command, run_command
from .thinking import ThoughtPrinter
from .render import Console, ReplyRenderer
from .session import ChatSession

log = logging.getLogger(__name__)

PROMPT = ">>> "
CONTINUATION = "... "
BLOCK = '"""'
HISTORY_VARIABLE = "LLMPACK_HISTORY"


def history_path() -> Path:
    return Path(os.environ.get(HISTORY_VARIABLE) or Path.home() / ".llmpack_history").expanduser()


class _QuietFileHistory(FileHistory):
    """A history file that never stops the chat: a failed read or write loses history, nothing else."""

    def load_history_strings(self) -> Iterable[str]:
        try:
            yield from super().load_history_strings()
        except (OSError, UnicodeDecodeError) as exc:
            log.debug("history file %s unreadable: %s", self.filename, exc)

    def store_string(self, string: str) -> None:
        try:
            super().store_string(string)
        except OSError as exc:
            log.debug("history file %s not written: %s", self.filename, exc)


def make_history(path: Path | None = None) -> History:
    path = path or history_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError as exc:
        log.warning(messages.CHAT_HISTORY_UNAVAILABLE.format(path=path, reason=exc.strerror or exc))
        return InMemoryHistory()
    return _QuietFileHistory(str(path))


def block_is_open(text: str) -> bool:
    """True while a triple-quoted block has been opened and not closed yet."""
    return text.lstrip().startswith(BLOCK) and text.count(BLOCK) % 2 == 1


def unquote_block(text: str) -> str:
    """The message inside a \"\"\" ... \"\"\" block (the whole text when it is not one)."""
    stripped = text.strip()
    if not stripped.startswith(BLOCK):
        return text
    inner = stripped[len(BLOCK):]
    inner = inner.removesuffix(BLOCK)
    return inner.strip("\n")


def key_bindings() -> KeyBindings:
    bindings = KeyBindings()

    @bindings.add("escape", "enter")
    @bindings.add("c-j")
    def _newline(event: KeyPressEvent) -> None:
        event.current_buffer.insert_text("\n")

    @bindings.add("enter", filter=~is_searching)
    def _enter(event: KeyPressEvent) -> None:
        buffer = event.current_buffer
        if block_is_open(buffer.text):
            buffer.insert_text("\n")
        else:
            buffer.validate_and_handle()

    @bindings.add("c-c", filter=~is_searching)
    def _interrupt(event: KeyPressEvent) -> None:
        # Like a shell: Ctrl-C drops a half-typed message; on an empty prompt it leaves.
        if event.current_buffer.text:
            event.current_buffer.reset()
        else:
            event.app.exit(exception=EOFError())

    return bindings


def make_prompt_session(history: History | None = None, **io) -> PromptSession:
    """`io` may give prompt_toolkit's input/output (tests pass a pipe input and a DummyOutput)."""
    return PromptSession(
        history=history if history is not None else make_history(),
        completer=CommandCompleter(),
        complete_while_typing=False,
        auto_suggest=AutoSuggestFromHistory(),
        key_bindings=key_bindings(),
        prompt_continuation=CONTINUATION,
        multiline=False,
        **io,
    )


@contextlib.contextmanager
def keys_not_echoed(fd: int | None):
    """While a reply streams, keys typed ahead are not echoed into it: they wait, unseen and byte
    for byte (no line editing, Enter still a carriage return), for the next prompt, which reads them.
    Ctrl-C still interrupts (ISIG is left on)."""
    try:
        import termios

        saved = termios.tcgetattr(fd) if fd is not None else None
    except Exception:  # noqa: BLE001 - ImportError off POSIX, termios.error when fd is not a terminal
        saved = None
    if saved is None:
        yield
        return
    quiet = list(saved)
    quiet[0] &= ~termios.ICRNL
    quiet[3] &= ~(termios.ECHO | termios.ICANON)
    termios.tcsetattr(fd, termios.TCSANOW, quiet)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSANOW, saved)


class Repl:
    def __init__(self, session: ChatSession, console: Console, terminal_fd: int | None = None) -> None:
        self.session = session
        self.console = console
        self.terminal_fd = terminal_fd

    def run(self, prompt_session: PromptSession) -> int:
        """Reads and answers messages until /exit, Ctrl-D, or Ctrl-C on an empty prompt."""
        while True:
            try:
                text = prompt_session.prompt(PROMPT)
            except EOFError:
                return 0
            except KeyboardInterrupt:  # e.g. Ctrl-C while searching history
                continue
            if ctrl_c_typed_ahead(prompt_session.input):
                # Enter then Ctrl-C at once: the prompt read both, so no signal came; the Ctrl-C was
                # meant for this message's reply, not (at the next prompt) for the chat itself.
                self.console.line(messages.CHAT_INTERRUPTED)
                continue
            if self.handle(text):
                return 0

    def run_lines(self, lines: Iterable[str]) -> int:
        """Chats with messages read from a pipe or file: one per line, or a \"\"\" block."""
        try:
            for text in read_messages(lines):
                if self.handle(text):
                    break
        except BrokenPipeError:
            # The reader went away (`| head`): stop quietly, as Unix tools do.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.console.stream.fileno())
        return 0

    def handle(self, text: str) -> bool:
        """Answers one message or runs one command. True when the chat should end. Never raises
        for a failed turn: the error is one line, and the chat goes on."""
        message = unquote_block(text)
        if not message.strip():
            return False
        try:
            rest = attach_dropped(message, self.session, self.console)  # a file dropped on the terminal:
            if rest is not None:  # its path typed, an absolute one looking like a command
                if rest:
                    self.answer(rest)  # the question typed after it
                return False
            if is_command(message.strip()) and "\n" not in message.strip():
                return run_command(message.strip(), self.session, self.console)
            self.answer(message)
        except KeyboardInterrupt:
            self.console.write("\n")
        except UserError as exc:
            self.console.line(user_line(exc), "class:error")
        except BrokenPipeError:
            raise  # nobody reads the chat any more: see run_lines
        except Exception as exc:  # a bug must not lose the conversation
            log.debug("chat turn failed", exc_info=True)
            self.console.error(messages.INTERNAL_ERROR.format(kind=type(exc).__name__, detail=exc))
        return False

    def answer(self, message: str) -> None:
        renderer = ReplyRenderer(self.console)
        tail: list[str] = []
        thought = ThoughtPrinter(self.console)

        def on_text(text: str) -> None:
            thought.close()
            renderer.feed(text)
            if text:
                tail[:] = [text]

        try:
            with keys_not_echoed(self.terminal_fd):
                reply = self.session.ask(message, on_text, self._room_made, thought.feed)
        finally:
            thought.close()
            renderer.finish()
        if tail and not tail[0].endswith("\n"):
            self.console.write("\n")
        if reply.finish_reason == "cancelled":
            self.console.line(messages.CHAT_INTERRUPTED)
        elif reply.finish_reason == "full":
            self.console.line(messages.CHAT_CONTEXT_FULL_REPLY)

    def _room_made(self, dropped: int) -> None:
        self.console.line(messages.CHAT_CONTEXT_DROPPED.format(n=dropped))


def ctrl_c_typed_ahead(prompt_input: Input) -> bool:
    """Takes Ctrl-C out of the keys read after Enter (kept for the next prompt); True if it was there."""
    keys = get_typeahead(prompt_input)
    kept = [key for key in keys if key.key != Keys.ControlC]
    store_typeahead(prompt_input, kept)
    return len(kept) != len(keys)


def read_messages(lines: Iterable[str]) -> Iterator[str]:
    block: list[str] | None = None
    for line in lines:
        line = line.rstrip("\r\n")
        if block is not None:
            block.append(line)
            if not block_is_open("\n".join(block)):
                yield "\n".join(block)
                block = None
        elif block_is_open(line):
            block = [line]
        else:
            yield line
    if block is not None:
        yield "\n".join(block)
