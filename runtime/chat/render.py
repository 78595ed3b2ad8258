"""Chat output: replies stream as they come; a fenced code block is highlighted with pygments (through
prompt_toolkit) line by line, each line once it is complete, so code still streams. Without colour
(NO_COLOR set, or the output not a terminal) everything is written as plain text, as it arrives.

Model output is untrusted: control characters (an escape sequence could rewrite the terminal) are
dropped before anything reaches the screen."""

from __future__ import annotations

import os
import re
import sys
from typing import TextIO

from prompt_toolkit.formatted_text import (
    FormattedText,
    PygmentsTokens,
    to_formatted_text,
)
from prompt_toolkit.output import Output, create_output
from prompt_toolkit.shortcuts import print_formatted_text
from prompt_toolkit.styles import Style, default_pygments_style, merge_styles

from ..errors import error_line

# C0 and C1 controls except tab and newline, and DEL.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
FENCE = "```"

STYLE = merge_styles([default_pygments_style(), Style.from_dict({
    "fence": "#888888",
    "info": "#888888",
    "error": "#ff5555",
    "banner.key": "bold",
    "code": "",
    "thought": "#888888 italic",
})])


def sanitize(text: str) -> str:
    return _CONTROL.sub("", text.replace("\r\n", "\n"))


def wants_color(stream: TextIO) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (https://no-color.org)."""
    try:
        return stream.isatty() and not os.environ.get("NO_COLOR")
    except (AttributeError, ValueError):
        return False


class Console:
    """Where the chat writes: plain text, or styled fragments when colour is on."""

    def __init__(self, stream: TextIO | None = None, color: bool | None = None,
                 output: Output | None = None, notes: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        # Where the chat's own lines (command answers, notices, errors) go instead, when the stream
        # must carry only replies (`--chat` with stdout to a pipe or a file).
        self.notes = notes
        self.color = wants_color(self.stream) if color is None else color
        self._output = output if output is not None else (create_output(stdout=self.stream) if self.color else None)

    def write(self, text: str) -> None:
        self.stream.write(sanitize(text))
        self.stream.flush()

    def styled(self, fragments: list[tuple[str, str]]) -> None:
        fragments = [(style, sanitize(text)) for style, text in fragments]
        if self._output is None:
            self.write("".join(text for _, text in fragments))
            return
        self.stream.flush()
        print_formatted_text(FormattedText(fragments), style=STYLE, output=self._output, end="",
                             include_default_pygments_style=False)

    def line(self, text: str, style: str = "class:info") -> None:
        """One line of the chat's own (an answer to a command, a notice), never model output."""
        self.note(text + "\n", style)

    def error(self, message: str) -> None:
        """An error the chat survives (a file it cannot read): one line, prefixed by errors.error_line."""
        self.line(error_line(message), "class:error")

    def note(self, text: str, style: str = "class:info") -> None:
        """Text of the chat's own, possibly many lines (a /dump): beside the replies, never among them."""
        if self.notes is not None:
            self.notes.write(sanitize(text))
            self.notes.flush()
            return
        self.styled([(style, text)])


def _lexer_for(language: str):
    from pygments.lexers import get_lexer_by_name
    from pygments.lexers.special import TextLexer
    from pygments.util import ClassNotFound

    # stripnl/ensurenl off: the tokens must add up to exactly the text given (see _code_line).
    options = {"stripnl": False, "ensurenl": False}
    name = language.strip().split()[0].lower() if language.strip() else ""
    try:
        return get_lexer_by_name(name, **options) if name else TextLexer(**options)
    except (ClassNotFound, ImportError):  # unknown, or a lexer left out of a frozen build
        return TextLexer(**options)


class ReplyRenderer:
    """Feeds a streamed reply to a Console. Outside code blocks text is written as it arrives, except
    the start of a line that may turn out to be a ``` fence; inside a block each line is held until
    its newline, then highlighted in the context of the lines before it."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.highlight = console.color
        self._pending = ""  # text not written yet
        self._at_line_start = True
        self._in_code = False
        self._lexer = None
        self._code: list[str] = []

    def feed(self, text: str) -> None:
        if not self.highlight:
            self.console.write(text)
            return
        self._pending += text
        while self._pending and self._step():
            pass

    def _step(self) -> bool:
        """Writes what can be written of the pending text; False when it must wait for more."""
        newline = self._pending.find("\n")
        if self._in_code or self._at_line_start:
            head = self._pending.lstrip(" ")
            if newline < 0:
                if self._in_code or FENCE.startswith(head[:3]) and len(self._pending) - len(head) <= 3:
                    return False  # a code line, or possibly a fence: wait for the whole line
                self._write_plain(self._pending)
                self._pending = ""
                return False
            line, self._pending = self._pending[:newline + 1], self._pending[newline + 1:]
            self._line(line)
            return True
        end = newline + 1 if newline >= 0 else len(self._pending)
        self._write_plain(self._pending[:end])
        self._pending = self._pending[end:]
        return True

    def _write_plain(self, text: str) -> None:
        if text:
            self.console.write(text)
            self._at_line_start = text.endswith("\n")

    def _line(self, line: str) -> None:
        stripped = line.strip()
        if not self._in_code and stripped.startswith(FENCE):
            self._in_code, self._code = True, []
            self._lexer = _lexer_for(stripped[3:])
            self.console.styled([("class:fence", line)])
        elif self._in_code and stripped.startswith(FENCE) and not stripped.strip("`"):
            self._in_code = False
            self.console.styled([("class:fence", line)])
        elif self._in_code:
            self._code_line(line)
        else:
            self.console.write(line)
        self._at_line_start = line.endswith("\n")

    def _code_line(self, line: str) -> None:
        """Lexes the block so far and writes the tokens of its last line: lexers keep state across
        lines (a string or comment opened above), which per-line lexing would lose."""
        self._code.append(line)
        block = "".join(self._code)
        tokens = list(self._lexer.get_tokens(block))
        if "".join(text for _, text in tokens) != block:  # a lexer that rewrites its input
            self.console.styled([("class:code", line)])
            return
        fragments = to_formatted_text(PygmentsTokens(tokens))
        start = sum(len(previous) for previous in self._code[:-1])
        out, position = [], 0
        for style, text, *_ in fragments:
            lo, hi = max(start, position), position + len(text)
            if hi > lo:
                out.append((style, text[lo - position:hi - position]))
            position += len(text)
        self.console.styled(out or [("", line)])

    def finish(self) -> None:
        """End of the reply: writes whatever is held back (an unterminated block's last line)."""
        if self._pending:
            pending, self._pending = self._pending, ""
            if self._in_code:
                self._code_line(pending)
            else:
                self.console.write(pending)
            self._at_line_start = pending.endswith("\n")
        self._in_code = False
