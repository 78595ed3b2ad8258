"""JSON-Schema string `format`s and `pattern`s as GBNF, for json_schema.py.

The grammar generates JSON text, so every character a pattern admits is written as it appears inside
a JSON string: `"` and `\\` escaped, tab/newline/carriage return as their escapes, other control
characters left out (a grammar may admit less than the schema, never more). Patterns are a safe
regular-expression subset, as llama.cpp's json-schema-to-grammar takes: literals, `.`, classes
(`[a-z]`, `[^...]`, `\\d \\w \\s` and their negations), groups (`(...)`, `(?:...)`), `|`, and the
quantifiers `* + ? {n} {n,} {n,m}` (lazy ones too), anchored (`^`/`$` only at the ends). Anything
else (backreferences, lookarounds, `\\b`, flags, Unicode properties) is a SchemaUnsupported naming it.
"""

from __future__ import annotations

import json

MAX_PATTERN_LENGTH = 1000
MAX_PATTERN_DEPTH = 32
MAX_PATTERN_REPEAT = 1000  # the grammar checker's limit on {m,n}

_DAY_31 = '"0" [1-9] | [12] [0-9] | "3" [01]'
_DAY_30 = '"0" [1-9] | [12] [0-9] | "30"'
_DAY_28 = '"0" [1-9] | "1" [0-9] | "2" [0-8]'  # February, leap years aside: never an impossible date
FORMAT_RULES = {
    "fmt-date": f'[0-9]{{4}} "-" ( ( "0" [13578] | "1" [02] ) "-" ( {_DAY_31} ) | ( "0" [469] | "11" ) "-" '
                f'( {_DAY_30} ) | "02-" ( {_DAY_28} ) )',
    "fmt-time": '( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] ":" [0-5] [0-9] ( "." [0-9]{1,6} )? '
                '( "Z" | [+-] ( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] )',
    "fmt-uuid": '[0-9a-f]{8} "-" [0-9a-f]{4} "-" [0-9a-f]{4} "-" [0-9a-f]{4} "-" [0-9a-f]{12}',
    "fmt-email": '[a-zA-Z0-9_+-]{1,32} ( "." [a-zA-Z0-9_+-]{1,32} ){0,3} "@" [a-zA-Z0-9] [a-zA-Z0-9-]{0,30} '
                 '( "." [a-zA-Z0-9] [a-zA-Z0-9-]{0,30} ){0,3} "." [a-zA-Z]{2,12}',
}
# What each format's string holds, as rules of FORMAT_RULES (date-time is a date, "T", a time).
FORMATS = {"date": "fmt-date", "time": "fmt-time", "date-time": 'fmt-date "T" fmt-time', "uuid": "fmt-uuid",
           "email": "fmt-email"}
FORMAT_DEPENDS = {"date": ["fmt-date"], "time": ["fmt-time"], "date-time": ["fmt-date", "fmt-time"],
                  "uuid": ["fmt-uuid"], "email": ["fmt-email"]}


class PatternUnsupported(ValueError):
    """The pattern uses a construct outside the supported subset; the message names it."""


_ESCAPED_IN_JSON = {ord('"'): '"\\\\\\""', ord("\\"): '"\\\\\\\\"', 9: '"\\\\t"', 10: '"\\\\n"', 13: '"\\\\r"'}
_LAST = 0x10FFFF
_DIGITS = [(48, 57)]
_WORD = [(48, 57), (65, 90), (95, 95), (97, 122)]
_SPACE = [(9, 10), (13, 13), (32, 32)]
_SIMPLE_ESCAPES = {"n": 10, "t": 9, "r": 13, "f": 12, "v": 11, "0": 0}


def _class_char(code: int) -> str:
    if code < 0x80 and chr(code).isalnum():
        return chr(code)
    if code <= 0xFF:
        return f"\\x{code:02X}"
    if code <= 0xFFFF:
        return f"\\u{code:04X}"
    return f"\\U{code:08X}"


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for low, high in sorted(ranges):
        if merged and low <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return merged


def _complement(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out, start = [], 0
    for low, high in _merge(ranges):
        if low > start:
            out.append((start, low - 1))
        start = high + 1
    if start <= _LAST:
        out.append((start, _LAST))
    return out


def _contains(ranges: list[tuple[int, int]], code: int) -> bool:
    return any(low <= code <= high for low, high in ranges)


def char_set(ranges: list[tuple[int, int]], negated: bool) -> str:
    """A GBNF expression for one character of the set, as JSON text."""
    admitted = _complement(ranges) if negated else _merge(ranges)
    specials = [_ESCAPED_IN_JSON[c] for c in sorted(_ESCAPED_IN_JSON) if _contains(admitted, c)]
    # Characters JSON writes as themselves: not control characters, quote, backslash, DEL, surrogates.
    plain = [(0x00, 0x1F), (0x22, 0x22), (0x5C, 0x5C), (0x7F, 0x7F), (0xD800, 0xDFFF)]
    # Written as the code points admitted, never as a negated class: llama.cpp's grammar decodes UTF-8
    # leniently, and a negated class would pass surrogates and values past U+10FFFF.
    safe = _complement(_complement(admitted) + plain)
    options = ["[" + "".join(_class_char(a) if a == b else f"{_class_char(a)}-{_class_char(b)}"
                             for a, b in safe) + "]"] if safe else []
    options += specials
    if not options:
        raise PatternUnsupported("a character class admits no character a JSON string can hold")
    return options[0] if len(options) == 1 else "( " + " | ".join(options) + " )"


class _Pattern:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.depth = 0

    def fail(self, what: str) -> PatternUnsupported:
        return PatternUnsupported(f"{what} (at offset {self.pos} of the pattern {json.dumps(self.text[:60])})")

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def alternation(self) -> str:
        options = [self.sequence()]
        while self.peek() == "|":
            self.pos += 1
            options.append(self.sequence())
        return options[0] if len(options) == 1 else "( " + " | ".join(o or '""' for o in options) + " )"

    def sequence(self) -> str:
        items = []
        while self.peek() not in ("", "|", ")"):
            if self.peek() == "$" and self.pos == len(self.text) - 1:
                self.pos += 1
                break
            atom = self.atom()
            items.append(self.quantified(atom))
        return " ".join(i for i in items if i)

    def atom(self) -> str:
        ch = self.peek()
        self.pos += 1
        if ch == "(":
            if self.text.startswith("?:", self.pos):
                self.pos += 2
            elif self.peek() == "?":
                raise self.fail("lookarounds, named groups and flags are not supported")
            self.depth += 1
            if self.depth > MAX_PATTERN_DEPTH:
                raise self.fail(f"groups nested deeper than {MAX_PATTERN_DEPTH}")
            inner = self.alternation()
            self.depth -= 1
            if self.peek() != ")":
                raise self.fail("an unclosed group")
            self.pos += 1
            return f"( {inner or chr(34) * 2} )"
        if ch == "[":
            return self.char_class()
        if ch == ".":
            return char_set([(10, 10)], negated=True)
        if ch == "\\":
            ranges, negated = self.escape(in_class=False)
            return char_set(ranges, negated)
        if ch in "^$":
            raise self.fail(f"'{ch}' is only supported at the pattern's start or end")
        if ch in "*+?{":
            raise self.fail(f"a quantifier '{ch}' with nothing to repeat")
        if ch in ")]}":
            raise self.fail(f"an unbalanced '{ch}'")
        return char_set([(ord(ch), ord(ch))], negated=False)

    def escape(self, in_class: bool) -> tuple[list[tuple[int, int]], bool]:
        ch = self.peek()
        if not ch:
            raise self.fail("a trailing backslash")
        self.pos += 1
        classes = {"d": _DIGITS, "w": _WORD, "s": _SPACE}
        if ch.lower() in classes:
            if ch.isupper():
                if in_class:
                    raise self.fail(f"'\\{ch}' inside a character class is not supported")
                return classes[ch.lower()], True
            return classes[ch], False
        if ch in _SIMPLE_ESCAPES:
            code = _SIMPLE_ESCAPES[ch]
            return [(code, code)], False
        if ch in "xu":
            size = 2 if ch == "x" else 4
            digits = self.text[self.pos:self.pos + size]
            if len(digits) != size or any(c not in "0123456789abcdefABCDEF" for c in digits):
                raise self.fail(f"'\\{ch}' needs {size} hex digits")
            self.pos += size
            code = int(digits, 16)
            return [(code, code)], False
        if ch.isascii() and ch.isalnum():
            raise self.fail(f"the escape '\\{ch}' is not supported")
        return [(ord(ch), ord(ch))], False

    def char_class(self) -> str:
        negated = self.peek() == "^"
        if negated:
            self.pos += 1
        ranges: list[tuple[int, int]] = []
        first = True
        while True:
            ch = self.peek()
            if not ch:
                raise self.fail("an unclosed character class")
            if ch == "]" and not first:
                self.pos += 1
                break
            first = False
            low = self.class_member(ranges)
            if low is None:
                continue
            if self.peek() == "-" and self.text[self.pos + 1:self.pos + 2] not in ("]", ""):
                self.pos += 1
                high = self.class_member(ranges)
                if high is None:
                    raise self.fail("a range that ends in a class escape")
                if high < low:
                    raise self.fail("a character range out of order")
                ranges.append((low, high))
            else:
                ranges.append((low, low))
        return char_set(ranges, negated)

    def class_member(self, ranges: list[tuple[int, int]]) -> int | None:
        """One character of a class (its code), or None after adding a class escape (\\d ...)."""
        ch = self.peek()
        self.pos += 1
        if ch == "[" and self.peek() == ":":
            raise self.fail("POSIX classes ([:alpha:]) are not supported")
        if ch != "\\":
            return ord(ch)
        escaped, _negated = self.escape(in_class=True)
        if len(escaped) == 1 and escaped[0][0] == escaped[0][1]:
            return escaped[0][0]
        ranges.extend(escaped)
        return None

    def quantified(self, atom: str) -> str:
        ch = self.peek()
        if ch in ("*", "+", "?"):
            self.pos += 1
            suffix = ch
        elif ch == "{":
            end = self.text.find("}", self.pos)
            body = self.text[self.pos + 1:end] if end > 0 else ""
            parts = body.split(",")
            if end < 0 or len(parts) > 2 or not parts[0].isdigit() or (len(parts) == 2 and parts[1]
                                                                         and not parts[1].isdigit()):
                raise self.fail("a malformed {m,n} quantifier")
            low = int(parts[0]) if len(parts[0]) < 6 else MAX_PATTERN_REPEAT + 1
            high = low if len(parts) == 1 else (int(parts[1]) if parts[1] and len(parts[1]) < 6
                                                else (None if not parts[1] else MAX_PATTERN_REPEAT + 1))
            if low > MAX_PATTERN_REPEAT or (high is not None and high > MAX_PATTERN_REPEAT):
                raise self.fail(f"a repetition above {MAX_PATTERN_REPEAT}")
            if high is not None and high < low:
                raise self.fail("a repetition {m,n} with n below m")
            self.pos = end + 1
            suffix = f"{{{low},{'' if high is None else high}}}" if high != low else f"{{{low}}}"
        else:
            return atom
        if self.peek() == "?":  # lazy: the same strings match
            self.pos += 1
        elif self.peek() in ("+", "*", "{") and self.peek():
            raise self.fail("possessive or stacked quantifiers are not supported")
        return f"{atom}{suffix}" if atom.startswith(("(", "[")) or " " not in atom else f"( {atom} ){suffix}"


def pattern_expression(pattern: object) -> str:
    """A GBNF expression for the JSON string's content (between its quotes) that `pattern` matches in
    full; raises PatternUnsupported."""
    if not isinstance(pattern, str):
        raise PatternUnsupported(f"'pattern' must be a string, got {json.dumps(pattern)}")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise PatternUnsupported(f"the pattern is longer than {MAX_PATTERN_LENGTH} characters")
    parser = _Pattern(pattern)
    if parser.peek() == "^":
        parser.pos += 1
    expression = parser.alternation()
    if parser.pos < len(pattern):
        raise parser.fail(f"an unexpected {pattern[parser.pos]!r}")
    return expression or '""'
