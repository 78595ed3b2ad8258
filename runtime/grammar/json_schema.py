"""JSON Schema to GBNF (llama.cpp's grammar format), for `response_format`.

`json_object` gets a grammar for any JSON object; `json_schema` gets one that only admits documents
of that schema: objects with their declared properties (required ones always, in declared order;
others only with `additionalProperties`), arrays with their item type and bounds, tuples (`prefixItems`,
or `items` as a list), enums and constants, strings with length bounds, `pattern`s (a regular-expression
subset: schema_strings.py) and the `format`s date, time, date-time, uuid and email, integers with
`minimum`/`maximum` (schema_numbers.py), numbers, booleans, null, `anyOf`/`oneOf`, nullable type lists
and local `$ref`s. Repetitions are bounded (whitespace runs, digits) so a constrained generation always
reaches the end of the document. Keywords that cannot be expressed (`not`, `if`, `uniqueItems`, a
pattern outside the subset...) are refused with a clear message rather than silently ignored;
annotations (`title`, `description`, other `format`s, bounds on non-integer numbers) are ignored. A schema is a client's input: its depth, its size, its bounds (an inverted or huge
`minLength`...) and its text (lone surrogates) are checked first, so that every failure is a
SchemaUnsupported with a reason, never a RecursionError or a grammar that llama.cpp chokes on.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .schema_numbers import BoundUnsupported, integer_bounds, integer_range
from .schema_strings import (
    FORMAT_DEPENDS,
    FORMAT_RULES,
    FORMATS,
    PatternUnsupported,
    pattern_expression,
)

PRIMITIVES = {
    "ws": '| " " | "\\n" [ \\t]{0,20}',
    # Code points, not bytes: llama.cpp's grammar decodes UTF-8 leniently, so a class that only excludes
    # would also pass UTF-16 surrogates and values past U+10FFFF, which are not text (invalid UTF-8).
    "char": '[ !#-[\\]-~\\x80-\\uD7FF\\uE000-\\U0010FFFF] | "\\\\" (["\\\\/bfnrt] | "u" [0-9a-fA-F]{4})',
    "string": '"\\"" char* "\\""',
    "integer": '"-"? ("0" | [1-9] [0-9]{0,15})',
    "number": '"-"? ("0" | [1-9] [0-9]{0,15}) ("." [0-9]{1,16})? ([eE] [-+]? [0-9]{1,3})?',
    "boolean": '"true" | "false"',
    "null": '"null"',
    "value": "object | array | string | number | boolean | null",
    "object": '"{" ws ( string ws ":" ws value ( ws "," ws string ws ":" ws value )* )? ws "}"',
    "array": '"[" ws ( value ( ws "," ws value )* )? ws "]"',
}
_DEPENDS = {"string": ["char"], "value": ["object", "array", "string", "number", "boolean", "null"],
            "object": ["ws", "string", "value"], "array": ["ws", "value"]}

UNSUPPORTED = ("patternProperties", "not", "if", "then", "else", "dependentSchemas",
               "dependentRequired", "propertyNames", "unevaluatedProperties", "contains", "uniqueItems",
               "multipleOf", "minProperties", "maxProperties", "unevaluatedItems")
MAX_ITEMS_UNROLLED = 100
MAX_LENGTH = 1000        # minLength/minItems above this are refused; a larger maximum means no maximum
MAX_SCHEMA_DEPTH = 64    # nested JSON in the schema, and nested sub-schemas reached through $refs
MAX_SCHEMA_NODES = 20_000
_NAME_LENGTH = 48        # rule names are built from property names: keep them short


class SchemaUnsupported(ValueError):
    """The schema uses something the grammar cannot express; the message says what."""


def literal(value: str) -> str:
    """A GBNF string literal matching exactly `value`."""
    out = []
    for ch in value:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def json_object_grammar() -> str:
    converter = _Converter({})
    return converter.finish(converter._use("object"))


def json_schema_grammar(schema: dict[str, Any]) -> str:
    if not isinstance(schema, dict):
        raise SchemaUnsupported("the JSON schema must be an object")
    _check_input(schema)
    converter = _Converter(schema)
    try:
        return converter.finish(converter.visit(schema, "root-value"))
    except RecursionError:  # a safety net: _check_input and the visit depth bound it well below
        raise SchemaUnsupported("the JSON schema is nested too deeply") from None


def _check_input(schema: Any) -> None:
    """Depth, size and text of the schema as JSON, walked without recursion."""
    pending: list[tuple[Any, int]] = [(schema, 1)]
    nodes = 0
    while pending:
        node, depth = pending.pop()
        nodes += 1
        if nodes > MAX_SCHEMA_NODES:
            raise SchemaUnsupported(f"the JSON schema has more than {MAX_SCHEMA_NODES} values")
        if depth > MAX_SCHEMA_DEPTH:
            raise SchemaUnsupported(f"the JSON schema is nested deeper than {MAX_SCHEMA_DEPTH} levels")
        if isinstance(node, dict):
            for key, value in node.items():
                _check_text(key)
                pending.append((value, depth + 1))
        elif isinstance(node, list):
            pending.extend((value, depth + 1) for value in node)
        elif isinstance(node, str):
            _check_text(node)


def _check_text(text: Any) -> None:
    if isinstance(text, str):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise SchemaUnsupported(f"the JSON schema holds an unpaired surrogate ({exc.object[exc.start:exc.end]!a}) "
                                    f"in {json.dumps(text[:40])}, which is not valid Unicode") from None


def _count(schema: dict[str, Any], key: str, name: str, default: int | None = None) -> int | None:
    """A length or item-count bound: a non-negative integer (5.0 is 5), or `default` when absent."""
    value = schema.get(key)
    if value is None:
        return default
    if isinstance(value, float) and value.is_integer() and abs(value) < 2 ** 63:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SchemaUnsupported(f"{name}: '{key}' must be a non-negative integer, got {json.dumps(value)}")
    return value


def _bounds(schema: dict[str, Any], low_key: str, high_key: str, name: str) -> tuple[int, int | None]:
    low = _count(schema, low_key, name, 0)
    high = _count(schema, high_key, name)
    assert low is not None
    if high is not None and high < low:
        raise SchemaUnsupported(f"{name}: {high_key} is below {low_key} ({high} < {low})")
    if low > MAX_LENGTH:
        raise SchemaUnsupported(f"{name}: {low_key} {low} is above the supported {MAX_LENGTH}")
    return low, high


class _Converter:
    def __init__(self, root: dict[str, Any]) -> None:
        self._root = root
        self._rules: dict[str, str] = {}
        self._primitives: set[str] = set()
        self._refs: dict[str, str] = {}
        self._strings: dict[tuple[int, int | None], str] = {}
        self._formats: set[str] = set()
        self._depth = 0

    def finish(self, root_expression: str) -> str:
        lines = [f"root ::= {root_expression}"]
        # Outer rules before the rules they use: llama.cpp numbers rules in order of appearance, and its
        # left-recursion search, started from each rule not yet reached, then walks each chain once.
        lines += [f"{name} ::= {body}" for name, body in reversed(self._rules.items())]
        lines += [f"{name} ::= {PRIMITIVES[name]}" for name in sorted(self._closure(self._primitives | {"ws"}))]
        lines += [f"{name} ::= {FORMAT_RULES[name]}" for name in sorted(self._formats)]
        return "\n".join(lines) + "\n"

    def _closure(self, names: set[str]) -> set[str]:
        pending, seen = list(names), set()
        while pending:
            name = pending.pop()
            if name not in seen:
                seen.add(name)
                pending.extend(_DEPENDS.get(name, []))
        return seen

    def _use(self, primitive: str) -> str:
        self._primitives.add(primitive)
        return primitive

    def _rule(self, name: str, body: str) -> str:
        name = re.sub(r"[^a-zA-Z0-9-]+", "-", name).strip("-")[-_NAME_LENGTH:].strip("-") or "rule"
        base, n = name, 1
        while name in self._rules or name in PRIMITIVES or name in FORMAT_RULES or name == "root":
            n += 1
            name = f"{base}-{n}"
        self._rules[name] = body
        return name

    def visit(self, schema: Any, name: str) -> str:
        """A GBNF expression matching `schema` (a rule name, or a small inline expression)."""
        if self._depth >= MAX_SCHEMA_DEPTH:  # $refs can nest deeper than the schema's own JSON
            raise SchemaUnsupported(f"the JSON schema nests sub-schemas deeper than {MAX_SCHEMA_DEPTH} levels")
        self._depth += 1
        try:
            return self._visit(schema, name)
        finally:
            self._depth -= 1

    def _visit(self, schema: Any, name: str) -> str:
        if schema is True or schema == {}:
            return self._use("value")
        if schema is False:
            raise SchemaUnsupported(f"{name}: a `false` schema admits nothing")
        if not isinstance(schema, dict):
            raise SchemaUnsupported(f"{name}: expected a schema object, got {json.dumps(schema)}")
        for keyword in UNSUPPORTED:
            if keyword in schema:
                raise SchemaUnsupported(f"{name}: the JSON schema keyword '{keyword}' is not supported")
        if "$ref" in schema:
            return self._ref(schema["$ref"])
        if "const" in schema:
            return literal(json.dumps(schema["const"], ensure_ascii=False))
        if "enum" in schema:
            values = schema["enum"]
            if not isinstance(values, list) or not values:
                raise SchemaUnsupported(f"{name}: 'enum' must be a non-empty list")
            return self._rule(name, " | ".join(literal(json.dumps(v, ensure_ascii=False)) for v in values))
        for keyword in ("anyOf", "oneOf"):
            if keyword in schema:
                options = schema[keyword]
                if not isinstance(options, list) or not options:
                    raise SchemaUnsupported(f"{name}: '{keyword}' must be a non-empty list")
                return self._rule(name, " | ".join(self.visit(o, f"{name}-{i}") for i, o in enumerate(options)))
        if "allOf" in schema:
            parts = schema["allOf"]
            if isinstance(parts, list) and len(parts) == 1:
                return self.visit(parts[0], name)
            raise SchemaUnsupported(f"{name}: 'allOf' with more than one schema is not supported")
        kind = schema.get("type")
        if isinstance(kind, list):
            others = {k: v for k, v in schema.items() if k != "type"}
            return self._rule(name, " | ".join(self.visit({**others, "type": t}, f"{name}-{t}") for t in kind))
        if kind is None:
            if "properties" in schema:
                kind = "object"
            elif "items" in schema or "prefixItems" in schema:
                kind = "array"
            elif "pattern" in schema:
                kind = "string"
            else:
                return self._use("value")
        if kind == "object":
            return self._object(schema, name)
        if kind == "array":
            return self._array(schema, name)
        if kind == "string":
            return self._string(schema, name)
        if kind == "integer":
            return self._integer(schema, name)
        if kind in ("number", "boolean", "null"):
            return self._use(kind)
        raise SchemaUnsupported(f"{name}: unknown type {json.dumps(kind)}")

    def _ref(self, ref: Any) -> str:
        if not isinstance(ref, str) or not ref.startswith("#/"):
            raise SchemaUnsupported(f"only local $refs ('#/$defs/...') are supported, got {json.dumps(ref)}")
        if ref in self._refs:
            return self._refs[ref]
        target: Any = self._root
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(target, dict) or part not in target:
                raise SchemaUnsupported(f"$ref {ref} points nowhere in the schema")
            target = target[part]
        # Name the rule before visiting, so a recursive schema refers back to it.
        name = self._rule("ref-" + ref[2:].split("/")[-1], "")
        self._refs[ref] = name
        self._rules[name] = self.visit(target, name + "-body")
        return name

    def _object(self, schema: dict[str, Any], name: str) -> str:
        properties = schema.get("properties") or {}
        if not isinstance(properties, dict):
            raise SchemaUnsupported(f"{name}: 'properties' must be an object")
        required = schema.get("required") or []
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise SchemaUnsupported(f"{name}: 'required' must be a list of property names")
        unknown = [r for r in required if r not in properties]
        if unknown:
            raise SchemaUnsupported(f"{name}: required property {unknown[0]!r} is not in 'properties'")
        extra = schema.get("additionalProperties")
        if not properties:
            if isinstance(extra, dict) and extra:
                value = self.visit(extra, f"{name}-value")
                member = f'{self._use("string")} ws ":" ws {value}'
                return self._rule(name, f'"{{" ws ( {member} ( ws "," ws {member} )* )? ws "}}"')
            return self._use("object")
        self._use("ws")
        members = []
        for key, sub in properties.items():
            value = self.visit(sub, f"{name}-{key}")
            members.append((key in required, f'{literal(json.dumps(key, ensure_ascii=False))} ws ":" ws {value}'))
        if extra is True or isinstance(extra, dict):
            # Other members after the declared ones, as an optional last "member" (their names are not
            # kept apart from the declared ones: the model writes what it was asked for first).
            value = self._use("value") if extra is True or extra == {} else self.visit(extra, f"{name}-value")
            other = self._rule(f"{name}-other", f'{self._use("string")} ws ":" ws {value}')
            members.append((False, f'{other} ( ws "," ws {other} )*'))
        return self._rule(name, f'"{{" ws {self._members(members, name)} ws "}}"')

    def _members(self, members: list[tuple[bool, str]], name: str) -> str:
        """Properties in declared order; optional ones may be left out, and commas go only between
        the members that are present. Built from the last property back, one rule per property, so
        that neither the grammar's nesting nor its size grows faster than the number of properties."""
        rest = ""    # the members after a present one: each with its leading comma
        start = ""   # the members from here on, when none before is present
        for i in range(len(members) - 1, -1, -1):
            required, member = members[i]
            follow = f'ws "," ws {member}' if required else f'( ws "," ws {member} )?'
            here = f"{member} {rest}".strip()
            if required:
                start = self._rule(f"{name}-from", here)
            elif start:
                start = self._rule(f"{name}-from", f"{here} | {start}")
            else:
                # The empty alternative first: after a trailing '|', llama.cpp reads on into the next line.
                start = self._rule(f"{name}-from", f"| {here}")
            rest = self._rule(f"{name}-rest", f"{follow} {rest}".strip()) if i > 0 else rest
        return start

    def _integer(self, schema: dict[str, Any], name: str) -> str:
        try:
            low, high = integer_bounds(schema)
            if low is None and high is None:
                return self._use("integer")
            return self._rule(name, integer_range(low, high))
        except BoundUnsupported as exc:
            raise SchemaUnsupported(f"{name}: {exc}") from None

    def _array(self, schema: dict[str, Any], name: str) -> str:
        items = schema.get("items", {})
        prefix = schema.get("prefixItems")
        if isinstance(items, list) or prefix is not None:
            return self._tuple(schema, name)
        item = self.visit(items, f"{name}-item")
        low, high = _bounds(schema, "minItems", "maxItems", name)
        self._use("ws")
        if high == 0:
            return self._rule(name, '"[" ws "]"')
        more_low = max(low - 1, 0)
        more = f"{{{more_low},{'' if high is None else high - 1}}}"
        if high is not None and high > MAX_ITEMS_UNROLLED:
            more = f"{{{more_low},}}"
        items = f'{item} ( ws "," ws {item} ){more}'
        body = f'"[" ws {items} ws "]"' if low > 0 else f'"[" ws ( {items} )? ws "]"'
        return self._rule(name, body)

    def _tuple(self, schema: dict[str, Any], name: str) -> str:
        """`prefixItems` (or draft 4's `items` list): those items, in order; more only when `items`
        (`additionalItems` in draft 4) is a schema, within minItems/maxItems."""
        if isinstance(schema.get("items"), list):
            prefix, rest = schema["items"], schema.get("additionalItems", False)
        else:
            prefix, rest = schema["prefixItems"], schema.get("items", False)
        if not isinstance(prefix, list) or not prefix:
            raise SchemaUnsupported(f"{name}: 'prefixItems' must be a non-empty list of schemas")
        low, high = _bounds(schema, "minItems", "maxItems", name)
        if high is not None and high < len(prefix):
            raise SchemaUnsupported(f"{name}: maxItems {high} is below the {len(prefix)} items of the tuple")
        self._use("ws")
        parts = [self.visit(sub, f"{name}-{i}") for i, sub in enumerate(prefix)]
        body = ' ws "," ws '.join(parts)
        more_low = max(low - len(prefix), 0)
        more_high = None if high is None else high - len(prefix)
        if rest is False or rest is None:
            if more_low:
                raise SchemaUnsupported(f"{name}: minItems {low} is above the {len(prefix)} items of the tuple")
        elif more_high != 0:
            item = self.visit(rest, f"{name}-rest")
            if more_high is not None and more_high > MAX_ITEMS_UNROLLED:
                more_high = None
            body += f' ( ws "," ws {item} ){{{more_low},{"" if more_high is None else more_high}}}'
        return self._rule(name, f'"[" ws {body} ws "]"')

    def _string(self, schema: dict[str, Any], name: str) -> str:
        if "pattern" in schema:
            try:
                expression = pattern_expression(schema["pattern"])
            except PatternUnsupported as exc:
                raise SchemaUnsupported(f"{name}: the JSON schema keyword 'pattern' is not supported here: {exc}") from None
            return self._rule(name, f'"\\"" {expression} "\\""')
        fmt = schema.get("format")
        if fmt in FORMATS:
            self._formats.update(FORMAT_DEPENDS[fmt])
            return self._rule(name, f'"\\"" {FORMATS[fmt]} "\\""')
        if schema.get("minLength") is None and schema.get("maxLength") is None:
            return self._use("string")
        low, high = _bounds(schema, "minLength", "maxLength", name)
        if high is not None and high > MAX_LENGTH:
            high = None  # as for arrays past MAX_ITEMS_UNROLLED: max_tokens bounds it in practice
        self._use("char")
        if (low, high) not in self._strings:  # one rule per distinct bounds: each expands to many
            bounds = f"{{{low},{'' if high is None else high}}}"
            rule = f"string-{low}-{'more' if high is None else high}"
            self._strings[(low, high)] = self._rule(rule, f'"\\"" char{bounds} "\\""')
        return self._strings[(low, high)]
