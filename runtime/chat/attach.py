"""Images and sounds in the terminal chat: `/image FILE`, `/audio FILE`, or a file dropped on the terminal
(which types its path). Each file is checked from its header as the server checks one
(runtime/engine/media_check.py), read once, and goes with the next message; the conversation keeps it
by path (/dump shows `[path]`), the session keeps its bytes so that a file moved or changed later does
not change what the model already saw."""

from __future__ import annotations

import io
import os
import shlex
import urllib.parse

from .. import messages
from ..errors import UserError
from .render import Console
from .session import ChatSession

CHAT_ATTACHED = "attached {path} ({what}): it goes with your next message"
CHAT_MEDIA_USAGE = "usage: /{kind} FILE"
CHAT_MEDIA_REFUSED = "{path}: {problem}"
CHAT_MEDIA_NO_PROJECTOR = "this model reads only text: it has no projector (run it with --mmproj FILE)"
CHAT_MEDIA_TOO_LARGE = "{path}: {size} MiB, more than the chat reads ({limit} MiB at most)"

# Far above any image or sound libmtmd decodes within media_check's bounds (16 megapixels, 600 s), and
# a stop before reading a wrong file of gigabytes into memory.
MAX_MEDIA_BYTES = 256 << 20



def attach(session: ChatSession, console: Console, path: str, kind: str | None) -> bool:
    """Attaches an image or a sound to the next message, or says in one line why not. `kind`: what
    the command asked for ("image" | "audio"; None: either, a dropped file)."""
    from ..engine.media_check import MediaProblem, inspect  # plain Python; the engine stays unloaded

    projector = getattr(session.engine, "projector", None)
    if projector is None:
        console.error(CHAT_MEDIA_NO_PROJECTOR)
        return False
    path = os.path.expanduser(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_MEDIA_BYTES + 1)
    except OSError as exc:
        console.error(messages.CHAT_CANNOT_READ.format(path=path, reason=exc.strerror or exc))
        return False
    if len(data) > MAX_MEDIA_BYTES:
        console.error(CHAT_MEDIA_TOO_LARGE.format(path=path, size=os.path.getsize(path) >> 20, limit=MAX_MEDIA_BYTES >> 20))
        return False
    try:
        info = inspect(data)
    except MediaProblem as exc:
        console.error(CHAT_MEDIA_REFUSED.format(path=path, problem=exc))
        return False
    noun = "an image" if info.kind == "image" else "a sound"
    if kind is not None and info.kind != kind:
        problem = f"{noun} ({info.format.upper()}), not {'an image' if kind == 'image' else 'a sound'}"
    elif not {"image": projector.vision, "audio": projector.audio}[info.kind]:
        problem = f"{noun} ({info.format.upper()}), which this model's projector does not read"
    else:
        problem = _undecodable(session, projector, data)
    if problem is None:
        session.attach(path, data)
        what = f"{info.format.upper()} {info.width}x{info.height}" if info.kind == "image" else f"{info.format.upper()} sound"
        console.line(CHAT_ATTACHED.format(path=path, what=what))
        return True
    console.error(CHAT_MEDIA_REFUSED.format(path=path, problem=problem))
    return False


def _undecodable(session: ChatSession, projector, data: bytes) -> str | None:
    """What libmtmd says of a file that passed the header checks, decoded once now: else it would fail
    each later turn of the conversation that holds it."""
    try:
        _, prompt = session.engine.tokenize_media(projector.marker + "\n", [data], False, False)  # type: ignore[attr-defined]
    except UserError:
        return "libmtmd cannot decode it (damaged, or a variant of its format it does not read)"
    prompt.free()
    return None


def dropped_files(line: str) -> tuple[list[str], str]:
    """The images and sounds a line starts with, as a terminal types dropped files (quoted as a shell
    reads them: '/a b.png', '/it'\\''s.png', /a\\ b.png; or file:///a%20b.png; several in a row), and the
    rest of the line (a question typed after them). Only existing files whose first bytes are an image or
    a sound count: anything else is text."""
    stream = io.StringIO(line)
    lexer = shlex.shlex(stream, posix=True)
    lexer.whitespace_split, lexer.commenters = True, ""
    files: list[str] = []
    rest = 0
    while True:
        try:
            token = lexer.get_token()
        except ValueError:  # a quote left open: text
            break
        path = _media_file(token) if token else None
        if path is None:
            break
        files.append(path)
        rest = stream.tell()  # shlex reads one character at a time: just past the token and one blank
    return files, (line[rest:].lstrip() if files else line)


def _media_file(token: str) -> str | None:
    from ..engine.media_check import sniff

    path = urllib.parse.unquote(urllib.parse.urlsplit(token).path) if token.startswith("file://") else token
    path = os.path.expanduser(path)
    try:
        with open(path, "rb") as f:
            return path if os.path.isfile(path) and sniff(f.read(64)) is not None else None
    except OSError:
        return None


def attach_dropped(line: str, session: ChatSession, console: Console) -> str | None:
    """Attaches the files a line starts with (see dropped_files). Returns the message left to send
    ("" when the line held only files), or None when the line starts with no image or sound."""
    if "\n" in line.strip():
        return None
    files, rest = dropped_files(line)
    if not files:
        return None
    attached = [attach(session, console, path, None) for path in files]
    # One refused: its line says why, and a question typed after it waits (not sent without the file).
    return rest.strip() if all(attached) else ""
