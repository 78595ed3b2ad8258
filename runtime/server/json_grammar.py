"""JSON Schema to GBNF (llama.cpp's grammar format), for `response_format`.

`json_object` gets a grammar for any JSON object; `json_schema` gets one that only admits documents
of that schema: objects with their declared properties (required ones always, in declared order, no
others), arrays with their item type and bounds, enums and constants, strings with length bounds,
numbers, booleans, null, `anyOf`/`oneOf`, nullable type lists and local `$ref`s. Repetitions are
bounded (whitespace runs, digits) so a constrained generation always reaches the end of the document.
Keywords that cannot be expressed (`pattern`, `not`, `if`, ...) are refused with a clear message
rather than silently ignored; annotations (`title`, `description`, `format`, bounds on numbers)
are ignored.
"""

from __future__ import annotations

import json
import re
from typing import Any

PRIMITIVES = {
    "ws": '| " " | "\\n" [ \\t]{0,20}',
    "char": '[^"\\\\\\x7F\\x00-\\x1F] | "\\\\" (["\\\\/bfnrt] | "u" [0-9a-fA-F]{4})',
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

UNSUPPORTED = ("pattern", "patternProperties", "not", "if", "then", "else", "dependentSchemas",
               "dependentRequired", "propertyNames", "unevaluatedProperties", "contains", "prefixItems",
               "uniqueItems")
MAX_ITEMS_UNROLLED = 100


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
    converter = _Converter(schema)
    return converter.finish(converter.visit(schema, "root-value"))


class _Converter:
    def __init__(self, root: dict[str, Any]) -> None:
        self._root = root
        self._rules: dict[str, str] = {}
        self._primitives: set[str] = set()
        self._refs: dict[str, str] = {}

    def finish(self, root_expression: str) -> str:
        lines = [f"root ::= {root_expression}"]
        lines += [f"{name} ::= {body}" for name, body in self._rules.items()]
        lines += [f"{name} ::= {PRIMITIVES[name]}" for name in sorted(self._closure(self._primitives | {"ws"}))]
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
        name = re.sub(r"[^a-zA-Z0-9-]+", "-", name).strip("-") or "rule"
        base, n = name, 1
        while name in self._rules or name in PRIMITIVES or name == "root":
            n += 1
            name = f"{base}-{n}"
        self._rules[name] = body
        return name

    def visit(self, schema: Any, name: str) -> str:
        """A GBNF expression matching `schema` (a rule name, or a small inline expression)."""
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
            elif "items" in schema:
                kind = "array"
            else:
                return self._use("value")
        if kind == "object":
            return self._object(schema, name)
        if kind == "array":
            return self._array(schema, name)
        if kind == "string":
            return self._string(schema, name)
        if kind in ("number", "integer", "boolean", "null"):
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
        return self._rule(name, f'"{{" ws {self._members(members, name)} ws "}}"')

    def _members(self, members: list[tuple[bool, str]], name: str) -> str:
        """Properties in declared order; optional ones may be left out, and commas go only between
        the members that are present."""
        def after_first(i: int) -> str:
            parts = [f'ws "," ws {m}' if req else f'( ws "," ws {m} )?' for req, m in members[i:]]
            return " ".join(parts)

        def first(i: int) -> str:
            if i == len(members):
                return ""
            req, member = members[i]
            here = f"{member} {after_first(i + 1)}".strip()
            if req:
                return here
            rest = first(i + 1)
            return f"( {here} | {rest} )" if rest else f"( {here} )?"

        return self._rule(f"{name}-members", first(0))

    def _array(self, schema: dict[str, Any], name: str) -> str:
        item = self.visit(schema.get("items", {}), f"{name}-item")
        low = int(schema.get("minItems", 0))
        high = schema.get("maxItems")
        if high is not None:
            high = int(high)
            if high < low:
                raise SchemaUnsupported(f"{name}: maxItems is below minItems")
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

    def _string(self, schema: dict[str, Any], name: str) -> str:
        low = schema.get("minLength")
        high = schema.get("maxLength")
        if low is None and high is None:
            return self._use("string")
        self._use("char")
        low = int(low or 0)
        bounds = f"{{{low},{'' if high is None else int(high)}}}"
        return self._rule(name, f'"\\"" char{bounds} "\\""')
