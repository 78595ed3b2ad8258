"""How many drafted tokens to verify at once: the number that gives the most tokens per second, from
how often a request's drafts have been right and what one more token in a batch costs on this machine.

Verifying a draft is not free where decoding is compute-bound (a CPU, a long context): on a 2-core Xeon
at 4k tokens of context, each token added to a one-token batch costs 0.42 of that batch (a batch of 49
costs 21 single steps). A draft of 48 tokens of which 3 are kept is then slower than no draft at all,
which is why llama-server's fixed 48-token n-gram drafts gained 1.13x on a code edit where drafts cut to
the expected run gain 1.46x (bench/spec_edit.py's trace, replayed). On a GPU a batch of 49 costs about
what one token does and the same rule drafts the whole run."""

from __future__ import annotations

DEFAULT_RELATIVE_COST = 0.4  # until this machine's is measured: a CPU's, the cautious side
FORGET = 0.97  # each timed step weighs this much less than the next: the context grows, the load varies


class DecodeCost:
    """What one more token costs a generating step, relative to a step of one token: a least-squares
    fit of seconds = fixed + per_token * tokens over the scheduler's recent generation steps (those
    with no prompt in them), older steps weighing less."""

    def __init__(self) -> None:
        self._weight = self._tokens = self._tokens_squared = self._seconds = self._product = 0.0

    def observe(self, tokens: int, seconds: float) -> None:
        decay = FORGET
        self._weight = self._weight * decay + 1
        self._tokens = self._tokens * decay + tokens
        self._tokens_squared = self._tokens_squared * decay + tokens * tokens
        self._seconds = self._seconds * decay + seconds
        self._product = self._product * decay + tokens * seconds

    @property
    def relative(self) -> float:
        weight, spread = self._weight, self._weight * self._tokens_squared - self._tokens ** 2
        if weight < 8 or spread < weight * weight:  # too few steps, or all of about one size
            return DEFAULT_RELATIVE_COST
        per_token = (weight * self._product - self._tokens * self._seconds) / spread
        fixed = (self._seconds - per_token * self._tokens) / weight
        if fixed + per_token <= 0:
            return DEFAULT_RELATIVE_COST
        return min(max(per_token / (fixed + per_token), 0.01), 1.0)


class DraftRecord:
    """How often one request's drafts have been right: the chance that a drafted token is kept, given
    that those before it were (a geometric model: kept tokens over kept tokens and misses), recent
    drafts weighing more. It starts at 3 in 4."""

    def __init__(self) -> None:
        self._kept, self._missed = 3.0, 1.0

    def settle(self, drafted: int, kept: int) -> None:
        self._kept = self._kept * 0.9 + kept
        self._missed = self._missed * 0.9 + (kept < drafted)

    @property
    def keep_chance(self) -> float:
        return self._kept / (self._kept + self._missed)


def best_draft_length(keep_chance: float, relative_cost: float, most: int) -> int:
    """The draft length, 1 to `most`, with the most tokens expected per unit of decoding: a step that
    verifies d drafted tokens yields 1 + p + ... + p^d of them and costs 1 + relative_cost * d. At
    least 1 where a draft is found, so that a request's record can recover."""
    best, best_rate, expected, term = 1, 0.0, 1.0, 1.0
    for length in range(1, most + 1):
        term *= keep_chance
        expected += term
        rate = expected / (1 + relative_cost * length)
        if rate < best_rate:
            break  # the rate rises, then falls: past its peak
        best, best_rate = length, rate
    return best
