"""The chat's slash commands: one table gives dispatch, `/help` lines and tab completion, so the three
cannot drift apart. Handlers act on a ChatSession and answer through a Console; none needs a
terminal."""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from prompt_toolkit.completion import (
    CompleteEvent,
    Completer,
    Completion,
    PathCompleter,
)
from prompt_toolkit.document import Document

from .. import messages
from .attach import CHAT_MEDIA_USAGE, attach, dropped_files
from .render import Console
from .session import ChatSession

EXIT = "exit"  # what a handler returns to end the chat

Handler = Callable[[ChatSession, Console, str], "str | None"]

# An uploaded file larger than this is refused before it is tokenized: a chat context holds far less.
MAX_UPLOAD_BYTES = 4 << 20


@dataclass(frozen=True)
class Command:
    name: str
    usage: str  # the arguments, as shown by /help
    help: str  # one line
    run: Handler
    argument: str = ""  # what tab completes after the name: "" | "command" | "path"


def _help(session: ChatSession, console: Console, arg: str) -> None:
    wanted = arg.strip().lstrip("/")
    if wanted:
        command = COMMANDS.get(wanted)
        if command is None:
            console.line(messages.CHAT_UNKNOWN_COMMAND.format(name="/" + wanted), "class:error")
        else:
            console.line(f"{_spelling(command)}: {command.help}")
        return
    width = max(len(_spelling(c)) for c in COMMANDS.values())
    for command in COMMANDS.values():
        console.line(f"{_spelling(command):<{width}}  {command.help}")
    console.line(messages.CHAT_HELP_HINT)


def _spelling(command: Command) -> str:
    return f"/{command.name} {command.usage}".rstrip()


def _exit(session: ChatSession, console: Console, arg: str) -> str:
    return EXIT


def _clear(session: ChatSession, console: Console, arg: str) -> None:
    console.line(messages.CHAT_CLEARED.format(n=session.conversation.clear()))


def _undo(session: ChatSession, console: Console, arg: str) -> None:
    count = session.conversation.undo()
    console.line(messages.CHAT_UNDONE.format(n=count) if count else messages.CHAT_NOTHING_TO_UNDO)


def _forget(session: ChatSession, console: Console, arg: str) -> None:
    count = session.conversation.forget()
    console.line(messages.CHAT_FORGOTTEN.format(n=count) if count else messages.CHAT_NOTHING_TO_FORGET)


def _context(session: ChatSession, console: Console, arg: str) -> None:
    usage = session.usage()
    console.line(messages.CHAT_CONTEXT.format(used=usage.used, n_ctx=usage.n_ctx, free=usage.free,
                                              messages=usage.messages))


def _stats(session: ChatSession, console: Console, arg: str) -> None:
    t = session.last_timings
    if t is None:
        console.line(messages.CHAT_NO_STATS)
        return
    console.line(messages.CHAT_STATS.format(
        prompt=t.prompt_tokens, cached=t.cached_tokens, prompt_speed=t.prompt_per_second,
        generated=t.generated_tokens, seconds=t.generation_ms / 1000, gen_speed=t.generation_per_second))


def _dump(session: ChatSession, console: Console, arg: str) -> None:
    text = session.conversation.transcript()
    path = arg.strip()
    if not path:
        console.note(text, "")
        return
    target = Path(os.path.expanduser(path))
    try:
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        console.error(messages.CHAT_CANNOT_WRITE.format(path=path, reason=exc.strerror or exc))
        return
    console.line(messages.CHAT_DUMPED.format(n=len(session.conversation), path=path))


def _push(session: ChatSession, console: Console, arg: str) -> None:
    point = session.conversation.push(arg.strip())
    console.line(messages.CHAT_PUSHED.format(label=point.label, n=len(point.messages)))


def _pop(session: ChatSession, console: Console, arg: str) -> None:
    point = session.conversation.pop()
    if point is None:
        console.line(messages.CHAT_STACK_EMPTY)
    else:
        console.line(messages.CHAT_POPPED.format(label=point.label, n=len(point.messages)))


def _stack(session: ChatSession, console: Console, arg: str) -> None:
    if not session.conversation.stack:
        console.line(messages.CHAT_STACK_EMPTY)
    for depth, point in enumerate(reversed(session.conversation.stack)):
        saved = datetime.datetime.fromtimestamp(point.saved_at).strftime("%H:%M:%S")
        console.line(f"{'top' if depth == 0 else '   '} {point.label}: {len(point.messages)} messages, saved at {saved}")


def _upload(session: ChatSession, console: Console, arg: str) -> None:
    path = arg.strip()
    if not path:
        console.line(messages.CHAT_UPLOAD_USAGE, "class:error")
        return
    try:
        with open(os.path.expanduser(path), "rb") as f:
            data = f.read(MAX_UPLOAD_BYTES + 1)
    except OSError as exc:
        console.error(messages.CHAT_CANNOT_READ.format(path=path, reason=exc.strerror or exc))
        return
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or "\x00" in text or len(data) > MAX_UPLOAD_BYTES:
        console.error(messages.CHAT_NOT_TEXT.format(path=path))
        return
    n_tokens = session.count_tokens(text)
    if n_tokens + session.reply_reserve() >= session.engine.n_ctx:
        # Older turns are dropped to make room, but a file larger than the whole context never fits.
        console.error(messages.CHAT_UPLOAD_TOO_LONG.format(path=path, n_tokens=n_tokens, n_ctx=session.engine.n_ctx))
        return
    session.conversation.add("user", f"{Path(path).name}:\n```\n{text.rstrip()}\n```")
    console.line(messages.CHAT_UPLOADED.format(path=path, n_tokens=n_tokens))


def _image(session: ChatSession, console: Console, arg: str) -> None:
    _media_command(session, console, arg, "image")


def _audio(session: ChatSession, console: Console, arg: str) -> None:
    _media_command(session, console, arg, "audio")


def _media_command(session: ChatSession, console: Console, arg: str, kind: str) -> None:
    paths, rest = dropped_files(arg) if arg.strip() else ([], "")
    if not arg.strip():
        console.line(CHAT_MEDIA_USAGE.format(kind=kind), "class:error")
    elif paths and not rest.strip():  # quoted or escaped as a dropped file is typed; several at once
        for path in paths:
            attach(session, console, path, kind)
    else:
        attach(session, console, arg.strip(), kind)  # say why this path is no file it reads


def _think(session: ChatSession, console: Console, arg: str) -> None:
    thinking = session.thinking
    if thinking is None or not thinking.available:
        console.line(messages.CHAT_THINK_UNAVAILABLE)
    elif arg.strip() in ("on", "off"):
        thinking.enabled = arg.strip() == "on"
        console.line(messages.CHAT_THINK_SET.format(state=arg.strip()))
    else:
        console.line(messages.CHAT_THINK_SET.format(state="on" if thinking.enabled else "off"))


def _system(session: ChatSession, console: Console, arg: str) -> None:
    text = arg.strip()
    conversation = session.conversation
    if not text:
        console.line(f"system prompt: {conversation.system}" if conversation.system else messages.CHAT_NO_SYSTEM)
    elif text == "-":
        conversation.system = None
        console.line(messages.CHAT_SYSTEM_REMOVED)
    else:
        conversation.system = text
        console.line(messages.CHAT_SYSTEM_SET.format(n_tokens=session.count_tokens(text)))


COMMANDS: dict[str, Command] = {c.name: c for c in (
    Command("help", "[COMMAND]", "list the commands, or explain one", _help, "command"),
    Command("exit", "", "leave the chat (also Ctrl-D, or Ctrl-C on an empty prompt)", _exit),
    Command("clear", "", "start the conversation over, keeping the system prompt", _clear),
    Command("undo", "", "drop the last exchange (your last message and its reply)", _undo),
    Command("forget", "", "drop the oldest message (and a reply left first) to free context", _forget),
    Command("context", "", "tokens used and free in the context window", _context),
    Command("stats", "", "prompt and generation speed of the last reply", _stats),
    Command("dump", "[FILE]", "print the conversation as text, or write it to FILE", _dump, "path"),
    Command("push", "[LABEL]", "save the conversation as a restore point", _push),
    Command("pop", "", "go back to the latest restore point (and drop it from the stack)", _pop),
    Command("stack", "", "list the restore points, latest first", _stack),
    Command("upload", "FILE", "add a text file to the conversation, as your next message's context", _upload, "path"),
    Command("image", "FILE", "attach an image to your next message (or drop the file on the terminal)", _image, "path"),
    Command("audio", "FILE", "attach a sound (WAV, MP3, FLAC) to your next message", _audio, "path"),
    Command("think", "[on|off]", "let a thinking model think before it answers, or not", _think),
    Command("system", "[TEXT]", "show the system prompt, or replace it with TEXT ('-' removes it)", _system),
)}


def is_command(line: str) -> bool:
    return line.startswith("/")


def run_command(line: str, session: ChatSession, console: Console) -> bool:
    """Runs one slash command line. Returns True when the chat should end."""
    name, _, arg = line[1:].partition(" ")
    command = COMMANDS.get(name.strip())
    if command is None:
        console.line(messages.CHAT_UNKNOWN_COMMAND.format(name="/" + name.strip()), "class:error")
        return False
    return command.run(session, console, arg) == EXIT


class CommandCompleter(Completer):
    """Completes command names after '/', command names after '/help ', paths after '/upload ' and
    '/dump '. Plain messages get no completions."""

    def __init__(self) -> None:
        self._paths = PathCompleter(expanduser=True)

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterable[Completion]:
        text = document.text_before_cursor
        if not text.startswith("/") or "\n" in text:
            return
        name, space, arg = text[1:].partition(" ")
        if not space:
            for command in COMMANDS.values():
                if command.name.startswith(name):
                    yield Completion("/" + command.name, start_position=-len(text),
                                     display_meta=command.help)
            return
        command = COMMANDS.get(name)
        if command is None:
            return
        if command.argument == "command":
            for other in COMMANDS.values():
                if other.name.startswith(arg.lstrip("/")):
                    yield Completion(other.name, start_position=-len(arg), display_meta=other.help)
        elif command.argument == "path":
            yield from self._paths.get_completions(Document(arg, len(arg)), complete_event)
