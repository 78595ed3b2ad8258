"""Integer bounds (`minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum`) as GBNF, for
json_schema.py: a range of integers written digit by digit (the classic range-to-regex construction,
as llama.cpp's json-schema-to-grammar does), so the grammar admits exactly the integers in range."""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DIGITS = 16  # as the integer primitive: larger bounds are no bound
LARGEST = 10 ** MAX_DIGITS - 1


class BoundUnsupported(ValueError):
    pass


def _bound(schema: dict[str, Any], key: str, exclusive_key: str, lower: bool) -> int | None:
    value = schema.get(key)
    exclusive = schema.get(exclusive_key)
    if isinstance(exclusive, bool):  # draft 4: a flag on minimum/maximum
        exclusive_value, flag = (value if exclusive else None), exclusive
    else:
        exclusive_value, flag = exclusive, exclusive is not None
    bounds = []
    for number, strict in ((value, False), (exclusive_value if flag else None, True)):
        if number is None:
            continue
        if isinstance(number, bool) or not isinstance(number, int | float) or not math.isfinite(number):
            raise BoundUnsupported(f"'{exclusive_key if strict else key}' must be a number, got {json.dumps(number)}")
        if lower:
            bounds.append(math.floor(number) + 1 if strict else math.ceil(number))
        else:
            bounds.append(math.ceil(number) - 1 if strict else math.floor(number))
    if not bounds:
        return None
    return max(bounds) if lower else min(bounds)


def integer_bounds(schema: dict[str, Any]) -> tuple[int | None, int | None]:
    return (_bound(schema, "minimum", "exclusiveMinimum", True),
            _bound(schema, "maximum", "exclusiveMaximum", False))


def _same_length(low: str, high: str) -> str:
    if low == high:
        return f'"{low}"'
    if len(low) == 1:
        return f"[{low}-{high}]"
    if low[0] == high[0]:
        return f'"{low[0]}" ( {_same_length(low[1:], high[1:])} )'
    rest = len(low) - 1
    if low[1:] == "0" * rest and high[1:] == "9" * rest:
        return f"[{low[0]}-{high[0]}] [0-9]{{{rest}}}"
    options = []
    first, last = int(low[0]), int(high[0])
    if low[1:] != "0" * rest:
        options.append(f'"{low[0]}" ( {_same_length(low[1:], "9" * rest)} )')
        first += 1
    tail = None
    if high[1:] != "9" * rest:
        tail = f'"{high[0]}" ( {_same_length("0" * rest, high[1:])} )'
        last -= 1
    if first <= last:
        options.append(f"[{first}-{last}] [0-9]{{{rest}}}")
    if tail:
        options.append(tail)
    return " | ".join(options)


def _non_negative(low: int, high: int) -> list[str]:
    options = []
    for digits in range(len(str(low)), len(str(high)) + 1):
        start = max(low, 10 ** (digits - 1) if digits > 1 else 0)
        end = min(high, 10 ** digits - 1)
        if start <= end:
            options.append(_same_length(str(start), str(end)))
    return options


def integer_range(low: int | None, high: int | None) -> str:
    """A GBNF expression for the integers from low to high (None: unbounded), in JSON's spelling."""
    low = -LARGEST if low is None else max(low, -LARGEST)
    high = LARGEST if high is None else min(high, LARGEST)
    if low > high:
        raise BoundUnsupported(f"no integer lies between the minimum and the maximum ({low} > {high})")
    options = []
    if low < 0:
        negatives = _non_negative(max(1, -high), -low)
        options.append('"-" ( ' + " | ".join(negatives) + " )")
    if high >= 0:
        options += _non_negative(max(low, 0), high)
    return "( " + " | ".join(options) + " )"
