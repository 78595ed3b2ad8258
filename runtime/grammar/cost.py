"""What a parsed GBNF grammar will cost llama.cpp, measured before llama.cpp sees it.

Two costs are bounded here, on llama.cpp's own representation of the grammar (rules of elements, as
runtime/grammar/check.py builds them):

- its left-recursion search at start (llama_grammar_detect_left_recursion) revisits a shared rule
  once per path, so it is exponential on some rule graphs, and recurses once per step;
- its pushdown stacks while sampling: after each character it keeps one stack per way the text so far
  can still continue. An ambiguous grammar (`p1 ::= "x" p0 "y" | "x" p0 "z"`, nested) doubles them
  at each character, and every token of the vocabulary is matched against every stack at every step:
  a 1 KB grammar can stall the decoding thread for hours. This is searched for by running the stacks
  on the characters that grow them most (a beam search over the grammar's own character classes),
  from root and from each named rule it does not reach. A heuristic, with a known blind spot: growth
  slow enough (over STABLE characters between two doublings, or deep stacks that use up the search's
  budget first) is not followed to MAX_STACKS; it also needs that much generated text to hurt.

Pure Python, no llama_cpp import.
"""

from __future__ import annotations

import bisect

# llama.cpp's element types (llama_gretype)
END, ALT, REF, CHAR, CHAR_NOT, RNG_UPPER, CHAR_ALT, CHAR_ANY = range(8)

MAX_LEFT_CALLS = 500_000    # steps of llama.cpp's left-recursion search
MAX_LEFT_DEPTH = 1000       # its recursion depth (a C stack frame per step)
MAX_STACKS = 1024           # llama.cpp's live stacks, after any character
SEARCH_DEPTH = 2048         # characters the stack search follows (within its budget)
STABLE = 128                # characters it follows without the stacks doubling
SEARCH_WIDTH = 2            # sets of stacks it keeps at each character
SEARCH_CHARS = 12           # characters it tries from each set of stacks
SEARCH_BUDGET = 400_000     # stack steps it may spend, after which the grammar is taken as it is
START_BUDGET = 200_000      # of which from each rule it starts from (enough to reach MAX_STACKS)

Rule = list[tuple[int, int]]
Stack = tuple[tuple[int, int], ...]  # (rule, element index) from the bottom up, as llama.cpp's stacks


class TooCostly(ValueError):
    """The grammar would cost llama.cpp too much; `rule` is the rule at fault when there is one."""

    def __init__(self, message: str, rule: int | None = None) -> None:
        super().__init__(message)
        self.rule = rule


def _is_end(element: tuple[int, int]) -> bool:
    return element[0] in (END, ALT)


# -- llama.cpp's left-recursion search -------------------------------------------------------------

def _left_refs(rule: Rule, may_be_empty: list[bool]) -> list[int]:
    """The rules detect_left_recursion descends into from `rule`, in its order."""
    out, descend = [], True
    for kind, value in rule:
        if kind == REF and descend:
            out.append(value)
            descend = may_be_empty[value]
        else:
            descend = kind in (END, ALT)
    return out


def check_left_recursion(rules: list[Rule]) -> None:
    """Raises TooCostly for left recursion (which llama.cpp refuses, saying little), and for graphs on
    which llama.cpp's search would take too long or recurse too deep."""
    n = len(rules)
    may_be_empty = [any(_is_end(e) and (i == 0 or rule[i - 1][0] == ALT) for i, e in enumerate(rule)) for rule in rules]
    edges = [_left_refs(rule, may_be_empty) for rule in rules]
    calls, depth = [0] * n, [0] * n
    state = [0] * n  # 0 new, 1 on the path, 2 done
    visited = [False] * n
    total = 0
    for top in range(n):
        if visited[top]:
            continue
        stack = [(top, 0)]
        state[top] = 1
        while stack:  # depth first, without recursion
            node, i = stack[-1]
            if i < len(edges[node]):
                stack[-1] = (node, i + 1)
                child = edges[node][i]
                if state[child] == 1:
                    raise TooCostly("is left-recursive (it can start with itself), which llama.cpp does not support",
                                    child)
                if state[child] == 0:
                    state[child] = 1
                    stack.append((child, 0))
                continue
            stack.pop()
            state[node] = 2
            calls[node] = 1 + sum(calls[c] for c in edges[node])
            depth[node] = 1 + max((depth[c] for c in edges[node]), default=0)
            if calls[node] > MAX_LEFT_CALLS or depth[node] > MAX_LEFT_DEPTH:
                raise TooCostly("starts with too many alternatives of alternatives for llama.cpp to search", node)
        total += calls[top]  # llama.cpp starts again from each rule not reached yet
        if total > MAX_LEFT_CALLS:
            raise TooCostly("has too many alternatives of alternatives for llama.cpp to search")
        pending = [top]
        while pending:
            node = pending.pop()
            if not visited[node]:
                visited[node] = True
                pending.extend(edges[node])


# -- llama.cpp's stacks while sampling --------------------------------------------------------------

class _Exhausted(Exception):
    """The search spent its budget without finding too many stacks."""


class _Class:
    """One character class of the grammar (llama_grammar_match_char's loop, done once): the intervals
    it lists, whether it is negated, the element after it, and code points that tell it apart."""

    def __init__(self, elements: Rule, index: int) -> None:
        self.positive = elements[index][0] in (CHAR, CHAR_ANY)
        self.any = False
        intervals = []
        while True:
            kind, value = elements[index]
            if elements[index + 1][0] == RNG_UPPER:
                intervals.append((value, elements[index + 1][1]))
                index += 2
            elif kind == CHAR_ANY:
                self.any = True
                index += 1
            else:
                intervals.append((value, value))
                index += 1
            if elements[index][0] != CHAR_ALT:
                break
        self.after = index
        merged: list[list[int]] = []
        for low, high in sorted(intervals):
            if merged and low <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], high)
            else:
                merged.append([low, high])
        self.lows = [low for low, _ in merged]
        self.highs = [high for _, high in merged]
        points = {0x41}
        for low, high in merged:
            points.update((low - 1, low, high, high + 1))
        valid = sorted(p for p in points if 0 < p <= 0x10FFFF and not 0xD800 <= p <= 0xDFFF)
        self.points = valid[::len(valid) // SEARCH_CHARS + 1] if len(valid) > SEARCH_CHARS else valid

    def matches(self, char: int) -> bool:
        i = bisect.bisect_right(self.lows, char) - 1
        found = self.any or (i >= 0 and char <= self.highs[i])
        return found == self.positive


class _Stacks:
    """llama_grammar_advance_stack and llama_grammar_accept, on code points, with a step budget."""

    def __init__(self, rules: list[Rule]) -> None:
        self.rules = rules
        self.alternatives = [[0] + [i + 1 for i, e in enumerate(rule) if e[0] == ALT] for rule in rules]
        self.classes: dict[tuple[int, int], _Class] = {}
        self.steps = 0
        self.budget = SEARCH_BUDGET
        self.reached: set[int] = set()  # rules the searches so far went into

    def spend(self, steps: int) -> None:
        self.steps += steps
        if self.steps > self.budget:
            raise _Exhausted()

    def char_class(self, rule: int, index: int) -> _Class:
        found = self.classes.get((rule, index))
        if found is None:
            found = self.classes[(rule, index)] = _Class(self.rules[rule], index)
            self.spend(found.after - index)
        return found

    def advance(self, stack: Stack, out: set[Stack]) -> None:
        todo, seen = [stack], set()
        while todo:
            current = todo.pop()
            if current in seen:
                continue
            seen.add(current)
            self.spend(1 + len(current) // 64)  # copying a deep stack is work too
            if len(seen) > MAX_STACKS * 8:
                raise TooCostly(f"lets llama.cpp expand a rule into more than {MAX_STACKS * 8} stacks at once")
            if not current:
                out.add(current)
                continue
            rule, index = current[-1]
            kind, value = self.rules[rule][index]
            if kind != REF:
                out.add(current)
                continue
            below = current[:-1]
            if not _is_end(self.rules[rule][index + 1]):
                below += ((rule, index + 1),)
            self.reached.add(value)
            for start in self.alternatives[value]:
                todo.append(below if _is_end(self.rules[value][start]) else below + ((value, start),))

    def accept(self, groups: dict[tuple[int, int], list[Stack]], char: int) -> frozenset[Stack]:
        """The stacks after `char`, from stacks grouped by their top (most share a few tops)."""
        out: set[Stack] = set()
        for (rule, index), stacks in groups.items():
            self.spend(1)
            klass = self.char_class(rule, index)
            if not klass.matches(char):
                continue
            after = klass.after
            keep = not _is_end(self.rules[rule][after])
            for stack in stacks:
                self.advance(stack[:-1] + ((rule, after),) if keep else stack[:-1], out)
        return frozenset(out)

    def characters(self, groups: dict[tuple[int, int], list[Stack]]) -> list[int]:
        """A few code points that tell the stacks' next classes apart."""
        points: set[int] = set()
        for top in groups:
            points.update(self.char_class(*top).points)
            self.spend(1)
        valid = sorted(points)
        return valid[::len(valid) // SEARCH_CHARS + 1] if len(valid) > SEARCH_CHARS else valid


def _by_top(stacks: frozenset[Stack]) -> dict[tuple[int, int], list[Stack]]:
    groups: dict[tuple[int, int], list[Stack]] = {}
    for stack in stacks:
        if stack:
            groups.setdefault(stack[-1], []).append(stack)
    return groups


def check_stacks(rules: list[Rule], starts: list[int]) -> None:
    """Raises TooCostly when some text makes llama.cpp keep more than MAX_STACKS stacks. The search
    starts from root, then from each rule of `starts` that no search went into, so that a long
    prefix before an ambiguous rule does not hide it; each start has a share of the budget."""
    machine = _Stacks(rules)
    for rule in starts:
        if rule in machine.reached:
            continue  # searched from where an earlier search went into it
        machine.budget = min(SEARCH_BUDGET, machine.steps + START_BUDGET)
        try:
            _search(machine, rule)
        except _Exhausted:
            if machine.steps >= SEARCH_BUDGET:
                return


def _search(machine: _Stacks, root: int) -> None:
    start: set[Stack] = set()
    for alternative in machine.alternatives[root]:
        machine.advance(() if _is_end(machine.rules[root][alternative]) else ((root, alternative),), start)
    beam = [frozenset(start)]
    most, since = max(len(start), 1), 0
    for _ in range(SEARCH_DEPTH):
        children: dict[frozenset[Stack], None] = {}
        for stacks in beam:
            groups = _by_top(stacks)
            machine.spend(len(stacks))
            for char in machine.characters(groups):
                after = machine.accept(groups, char)
                if len(after) > MAX_STACKS:
                    raise TooCostly(f"is ambiguous enough to make llama.cpp follow more than {MAX_STACKS} "
                                    "readings of the text at once", root)
                if after:
                    children[after] = None
        beam = sorted(children, key=len, reverse=True)[:SEARCH_WIDTH]
        if not beam:
            return
        # What costs is doubling, again and again; one that needs a long stretch of text between
        # doublings needs as long a generation. Past STABLE characters without one, the search moves on.
        most, since = (len(beam[0]), 0) if len(beam[0]) >= 2 * most else (most, since + 1)
        if since > STABLE:
            return
