"""A GBNF checker that runs before llama.cpp ever sees a grammar.

llama.cpp's parser (`llama-grammar.cpp`) trusts its input: `"a"{2,1}` underflows into an endless
expansion, deep parentheses overflow the C stack, a reversed range or a character no token can
produce passes the parser and aborts the process at the first sampled token, and its left-recursion
check is exponential on some rule graphs. This module parses a grammar the same way (same lexing,
same rewrite of repetitions into rules, same symbol numbering) and raises GrammarRefused, with one
precise reason, for anything invalid or outside bounds that keep llama.cpp's work small; what the
parsed grammar will cost llama.cpp (its left-recursion search, its stacks while sampling) is measured
by runtime/grammar/cost.py. A grammar it accepts is one llama.cpp parses, and initialises, quickly.

Pure Python on purpose (no llama_cpp import): the server and the flags check with it before any
native code runs.
"""

from __future__ import annotations

import functools

from . import cost as grammar_cost
from .cost import ALT, CHAR, CHAR_ALT, CHAR_ANY, CHAR_NOT, END, REF, RNG_UPPER

MAX_BYTES = 64 * 1024       # the grammar text, UTF-8
MAX_DEPTH = 64              # nested parentheses (llama.cpp recurses once per level)
MAX_REPEAT = 1000           # the m and n of {m,n} (llama.cpp: 2000, then silently unbounded)
MAX_RULES = 10_000          # rules after llama.cpp expands repetitions into rules
MAX_ELEMENTS = 200_000      # grammar elements after that expansion
_REPEAT_RULES = 2000        # llama.cpp's MAX_REPETITION_THRESHOLD on nested repetitions


# Code points a model's text can hold: not NUL (llama.cpp rejects tokens whose text starts with it),
# not a surrogate, not past Unicode's last code point.
_VALID = ((1, 0xD7FF), (0xE000, 0x10FFFF))
_ESCAPES = {"t": 9, "r": 13, "n": 10, "\\": 92, '"': 34, "[": 91, "]": 93, "-": 45}
_HEX_SIZES = {"x": 2, "u": 4, "U": 8}


class GrammarRefused(ValueError):
    """The grammar is invalid or unsafe for llama.cpp; `reason` says why, for the user."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _is_word(ch: str) -> bool:
    return ch.isascii() and (ch.isalnum() or ch == "-")


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.end = len(text)
        self.symbols: dict[str, int] = {}
        self.names: list[str] = []
        self.rules: dict[int, list[tuple[int, int]]] = {}
        self.first_use: dict[int, int] = {}  # symbol -> offset of its first reference
        self.elements = 0
        self.depth = 0

    # -- errors and positions ------------------------------------------------------------------
    def line(self, pos: int) -> int:
        return self.text.count("\n", 0, min(pos, self.end)) + 1

    def fail(self, what: str, pos: int) -> GrammarRefused:
        return GrammarRefused(f"{what} (line {self.line(pos)})")

    def at(self, pos: int) -> str:
        return self.text[pos] if pos < self.end else ""

    def show(self, pos: int) -> str:
        return repr(self.text[pos:pos + 12]) if pos < self.end else "the end"

    # -- lexing, as llama.cpp's parse_space / parse_name / parse_int / parse_char --------------
    def space(self, pos: int, newline_ok: bool) -> int:
        text, end = self.text, self.end
        while pos < end:
            ch = text[pos]
            if ch == "#":
                while pos < end and text[pos] not in "\r\n":
                    pos += 1
            elif ch in " \t" or (newline_ok and ch in "\r\n"):
                pos += 1
            else:
                break
        return pos

    def name(self, pos: int) -> int:
        start = pos
        while pos < self.end and _is_word(self.text[pos]):
            pos += 1
        if pos == start:
            raise self.fail(f"expected a rule name at {self.show(start)}", start)
        return pos

    def integer(self, pos: int) -> tuple[int, int]:
        start = pos
        while pos < self.end and self.text[pos].isascii() and self.text[pos].isdigit():
            pos += 1
        if pos == start:
            raise self.fail(f"expected a number at {self.show(start)}", start)
        if pos - start > 7:  # anything this long is far above MAX_REPEAT; spare int() a huge string
            return MAX_REPEAT * 10, pos
        return int(self.text[start:pos]), pos

    def char(self, pos: int) -> tuple[int, int]:
        text = self.text
        if pos >= self.end:
            raise self.fail("unexpected end of the grammar", pos)
        if text[pos] != "\\":
            return ord(text[pos]), pos + 1
        kind = self.at(pos + 1)
        if kind in _HEX_SIZES:
            size = _HEX_SIZES[kind]
            digits = text[pos + 2:pos + 2 + size]
            if len(digits) != size or any(c not in "0123456789abcdefABCDEF" for c in digits):
                raise self.fail(f"\\{kind} needs {size} hex digits at {self.show(pos)}", pos)
            value = int(digits, 16)
            if value > 0x10FFFF:
                raise self.fail(f"\\{kind}{digits} is above U+10FFFF, the last Unicode code point", pos)
            return value, pos + 2 + size
        if kind in _ESCAPES:
            return _ESCAPES[kind], pos + 2
        raise self.fail(f"unknown escape {text[pos:pos + 2]!r}", pos)

    # -- structure, as llama.cpp's parse_rule / parse_alternates / parse_sequence -------------
    def symbol(self, name: str) -> int:
        if name not in self.symbols:
            self.symbols[name] = len(self.names)
            self.names.append(name)
        return self.symbols[name]

    def new_symbol(self, base: str) -> int:
        ident = len(self.names)
        self.symbols[f"{base}_{ident}"] = ident
        self.names.append(f"{base}_{ident}")
        if len(self.names) > MAX_RULES:
            raise GrammarRefused(f"more than {MAX_RULES} rules once repetitions are expanded")
        return ident

    def add_rule(self, ident: int, rule: list[tuple[int, int]]) -> None:
        self.elements += len(rule) - len(self.rules.get(ident, ()))
        if self.elements > MAX_ELEMENTS:
            raise GrammarRefused(f"more than {MAX_ELEMENTS} elements once repetitions are expanded")
        self.rules[ident] = rule

    def parse(self) -> None:
        pos = self.space(0, True)
        while pos < self.end:
            pos = self.rule(pos)

    def rule(self, pos: int) -> int:
        name_end = self.name(pos)
        name = self.text[pos:name_end]
        ident = self.symbol(name)
        pos = self.space(name_end, False)
        if self.text[pos:pos + 3] != "::=":
            raise self.fail(f"expected '::=' after the rule name {name!r}, found {self.show(pos)}", pos)
        pos = self.alternates(self.space(pos + 3, True), name, ident, False)
        if self.at(pos) == "\r":
            pos += 2 if self.at(pos + 1) == "\n" else 1
        elif self.at(pos) == "\n":
            pos += 1
        elif pos < self.end:
            raise self.fail(f"unexpected {self.show(pos)} in rule {name!r}", pos)
        return self.space(pos, True)

    def alternates(self, pos: int, name: str, ident: int, nested: bool) -> int:
        rule: list[tuple[int, int]] = []
        pos = self.sequence(pos, name, rule, nested)
        while self.at(pos) == "|":
            rule.append((ALT, 0))
            pos = self.sequence(self.space(pos + 1, True), name, rule, nested)
        rule.append((END, 0))
        self.add_rule(ident, rule)
        return pos

    def sequence(self, pos: int, name: str, rule: list[tuple[int, int]], nested: bool) -> int:
        last_start = len(rule)
        n_prev_rules = 1
        text = self.text
        while pos < self.end:
            ch = text[pos]
            start = pos
            if ch == '"':
                pos += 1
                last_start, n_prev_rules = len(rule), 1
                while self.at(pos) != '"':
                    if pos >= self.end:
                        raise self.fail("a string literal is not closed", start)
                    value, at = self.char(pos)
                    if not any(lo <= value <= hi for lo, hi in _VALID):
                        raise self.fail(f"the literal holds U+{value:04X}, which no model output can contain", pos)
                    rule.append((CHAR, value))
                    pos = at
                pos = self.space(pos + 1, nested)
            elif ch == "[":
                last_start, n_prev_rules = len(rule), 1
                pos = self.space(self.char_class(pos, rule), nested)
            elif ch in "<!":
                raise self.fail("token references (<...>, !<...>) are not supported", pos)
            elif _is_word(ch):
                name_end = self.name(pos)
                ref = self.symbol(text[pos:name_end])
                self.first_use.setdefault(ref, pos)
                last_start, n_prev_rules = len(rule), 1
                rule.append((REF, ref))
                pos = self.space(name_end, nested)
            elif ch == "(":
                if self.depth >= MAX_DEPTH:
                    raise self.fail(f"parentheses nested deeper than {MAX_DEPTH}", pos)
                self.depth += 1
                n_before = len(self.names)
                sub = self.new_symbol(name)
                pos = self.alternates(self.space(pos + 1, True), name, sub, True)
                self.depth -= 1
                n_prev_rules = max(1, len(self.names) - n_before)
                last_start = len(rule)
                rule.append((REF, sub))
                if self.at(pos) != ")":
                    raise self.fail("a '(' is not closed", start)
                pos = self.space(pos + 1, nested)
            elif ch == ".":
                last_start, n_prev_rules = len(rule), 1
                rule.append((CHAR_ANY, 0))
                pos = self.space(pos + 1, nested)
            elif ch in "*+?{":
                if ch == "{":
                    low, high, pos = self.bounds(pos, nested)
                else:
                    low, high = {"*": (0, None), "+": (1, None), "?": (0, 1)}[ch]
                    pos = self.space(pos + 1, nested)
                if last_start == len(rule):
                    raise self.fail(f"{text[start:pos].strip()!r} follows nothing it could repeat", start)
                n_prev_rules = self.repeat(rule, last_start, low, high, n_prev_rules, name, start)
            else:
                break
        return pos

    def char_class(self, pos: int, rule: list[tuple[int, int]]) -> int:
        start = pos
        pos += 1
        negated = self.at(pos) == "^"
        if negated:
            pos += 1
        ranges: list[tuple[int, int]] = []
        while self.at(pos) != "]":
            if pos >= self.end:
                raise self.fail("a '[' character class is not closed", start)
            item = pos
            low, pos = self.char(pos)
            rule.append((CHAR_ALT if ranges else (CHAR_NOT if negated else CHAR), low))
            high = low
            if self.at(pos) == "-" and self.at(pos + 1) != "]":
                if pos + 1 >= self.end:
                    raise self.fail("a '[' character class is not closed", start)
                high, pos = self.char(pos + 1)
                if high < low:
                    raise self.fail(f"the character range {self.text[item:pos]} is reversed "
                                    f"(U+{low:04X} is above U+{high:04X})", item)
                rule.append((RNG_UPPER, high))
            ranges.append((low, high))
        if not ranges:
            raise self.fail(f"the character class {self.text[start:pos + 1]} is empty", start)
        if not _class_can_match(ranges, negated):
            raise self.fail(f"the character class {self.text[start:pos + 1]} matches no character a model "
                            "can produce", start)
        return pos + 1

    def bounds(self, pos: int, nested: bool) -> tuple[int, int | None, int]:
        start = pos
        pos = self.space(pos + 1, nested)
        low, pos = self.integer(pos)
        pos = self.space(pos, nested)
        high: int | None
        if self.at(pos) == "}":
            high = low
        elif self.at(pos) == ",":
            pos = self.space(pos + 1, nested)
            high = None
            if self.at(pos).isascii() and self.at(pos).isdigit():
                high, pos = self.integer(pos)
                pos = self.space(pos, nested)
            if self.at(pos) != "}":
                raise self.fail(f"expected '}}' in the repetition at {self.show(start)}", start)
        else:
            raise self.fail(f"expected ',' or '}}' in the repetition at {self.show(start)}", start)
        written = self.text[start:pos + 1].replace(" ", "")
        if high is not None and low > high:
            raise self.fail(f"repetition {written} has its minimum above its maximum", start)
        if low > MAX_REPEAT or (high is not None and high > MAX_REPEAT):
            raise self.fail(f"repetition {written} is above the limit of {MAX_REPEAT}", start)
        return low, high, self.space(pos + 1, nested)

    def repeat(self, rule: list[tuple[int, int]], last_start: int, low: int, high: int | None,
               n_prev_rules: int, name: str, at: int) -> int:
        """llama.cpp's handle_repetitions: S{m,n} becomes m copies of S, then n-m nested optional rules."""
        prev = rule[last_start:]
        total = high if high else (low if low > 0 else 1)
        if n_prev_rules * total > _REPEAT_RULES:
            raise self.fail("a repetition of a group that already holds repetitions expands to too many rules", at)
        n_opt = 1 if high is None else high - low
        if (self.elements + len(rule) + max(low - 1, 0) * len(prev) + n_opt * (len(prev) + 2) > MAX_ELEMENTS
                or len(self.names) + n_opt > MAX_RULES):
            raise self.fail("a repetition expands beyond the grammar's size limit", at)
        if low == 0:
            del rule[last_start:]
        else:
            rule.extend(prev * (low - 1))
        last = 0
        for i in range(n_opt):
            ident = self.new_symbol(name)
            rec = list(prev)
            if i > 0 or high is None:
                rec.append((REF, ident if high is None else last))
            rec += [(ALT, 0), (END, 0)]
            self.add_rule(ident, rec)
            last = ident
        if n_opt > 0:
            rule.append((REF, last))
        return n_prev_rules * total


def _class_can_match(ranges: list[tuple[int, int]], negated: bool) -> bool:
    if not negated:
        return any(lo <= high and low <= hi for low, high in ranges for lo, hi in _VALID)
    for lo, hi in _VALID:  # some valid code point outside every range?
        point = lo
        for low, high in sorted(ranges):
            if low <= point <= high:
                point = high + 1
        if point <= hi:
            return True
    return False


def _check_rules(parser: _Parser) -> None:
    names, rules = parser.names, parser.rules
    for ident, name in enumerate(names):
        if ident not in rules:
            raise parser.fail(f"rule {name!r} is used but never defined", parser.first_use.get(ident, 0))
    if not rules:
        raise GrammarRefused("the grammar has no rules")
    if "root" not in parser.symbols:
        raise GrammarRefused("the grammar has no 'root' rule")
    rules = [parser.rules[i] for i in range(len(names))]
    # Named rules after root: the stack search starts from each, so a long prefix hides none of them.
    starts = [parser.symbols["root"], *(i for i, name in enumerate(names) if "_" not in name and name != "root")]
    try:
        grammar_cost.check_left_recursion(rules)
        grammar_cost.check_stacks(rules, starts)
    except grammar_cost.TooCostly as exc:
        if exc.rule is None:
            raise GrammarRefused(f"the grammar {exc}") from None
        raise parser.fail(f"rule {_user_name(parser, exc.rule)!r} {exc}", parser.first_use.get(exc.rule, 0)) from None


def _user_name(parser: _Parser, ident: int) -> str:
    """The name a user wrote: a generated rule is named after the rule it came from."""
    return parser.names[ident].rsplit("_", 1)[0]


def check_grammar(text: str) -> None:
    """Raises GrammarRefused unless `text` is a GBNF grammar llama.cpp can take safely."""
    if not isinstance(text, str):
        raise GrammarRefused("the grammar must be text")
    reason = _verdict(text)
    if reason is not None:
        raise GrammarRefused(reason)


@functools.lru_cache(maxsize=64)
def _verdict(text: str) -> str | None:
    """The reason `text` is refused, or None; cached, as a client sends the same schema again and
    again, and a server checks each grammar twice (when it makes it, and before llama.cpp)."""
    try:
        _check(text)
    except GrammarRefused as refused:
        return refused.reason
    return None


def _check(text: str) -> None:
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise GrammarRefused(f"the grammar holds an unpaired surrogate ({exc.object[exc.start:exc.end]!a}), "
                             "which is not valid Unicode") from None
    if size > MAX_BYTES:
        raise GrammarRefused(f"the grammar is {size} bytes, above the limit of {MAX_BYTES}")
    if "\x00" in text:
        # llama.cpp reads a C string: everything after a NUL would be silently dropped.
        parser = _Parser(text)
        raise parser.fail("the grammar holds a NUL character", text.index("\x00"))
    parser = _Parser(text)
    parser.parse()
    _check_rules(parser)
