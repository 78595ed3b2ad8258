"""A request's tools and tool_choice, checked and normalised (OpenAI's function tools)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..errors import UserError

NAME = re.compile(r"^[a-zA-Z0-9_.-]{1,64}$")


class ToolRequestError(UserError):
    """A tools / tool_choice / messages field a client got wrong; `param` names it."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]

    def openai(self) -> dict[str, Any]:
        """The OpenAI shape templates are written for (transformers passes tools this way)."""
        function: dict[str, Any] = {"name": self.name}
        if self.description:
            function["description"] = self.description
        function["parameters"] = self.parameters
        return {"type": "function", "function": function}


@dataclass(frozen=True)
class ToolChoice:
    mode: str  # "none" | "auto" | "required"
    tools: tuple[Tool, ...]  # the tools the model may call (one, for a named choice)
    parallel: bool = True

    @property
    def forced(self) -> bool:
        return self.mode == "required"


def parse_tools(raw: list[dict[str, Any]] | None) -> tuple[Tool, ...]:
    tools = []
    for i, item in enumerate(raw or []):
        if not isinstance(item, dict) or item.get("type", "function") != "function":
            raise ToolRequestError("only tools of type \"function\" are supported", f"tools.{i}.type")
        function = item.get("function")
        if not isinstance(function, dict):
            raise ToolRequestError("a function tool needs a \"function\" object", f"tools.{i}.function")
        name = function.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            raise ToolRequestError("a function's name must be 1 to 64 letters, digits, _ . or -",
                                   f"tools.{i}.function.name")
        if any(t.name == name for t in tools):
            raise ToolRequestError(f"two tools are named {name!r}", f"tools.{i}.function.name")
        parameters = function.get("parameters")
        if parameters is None:
            parameters = {"type": "object", "properties": {}}
        if not isinstance(parameters, dict):
            raise ToolRequestError("a function's parameters must be a JSON Schema object",
                                   f"tools.{i}.function.parameters")
        description = function.get("description") or ""
        if not isinstance(description, str):
            raise ToolRequestError("a function's description must be a string", f"tools.{i}.function.description")
        tools.append(Tool(name, description, parameters))
    return tuple(tools)


def tool_choice(tools: tuple[Tool, ...], choice: str | dict[str, Any] | None, parallel: bool | None) -> ToolChoice:
    parallel = True if parallel is None else bool(parallel)
    if choice is None:
        choice = "auto" if tools else "none"
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            raise ToolRequestError(f"tool_choice must be \"none\", \"auto\", \"required\" or a function, not {choice!r}",
                                   "tool_choice")
        if choice != "none" and not tools:
            raise ToolRequestError(f"tool_choice {choice!r} needs tools", "tool_choice")
        return ToolChoice(choice, tools if choice != "none" else (), parallel)
    function = choice.get("function") if choice.get("type") == "function" else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str):
        raise ToolRequestError('tool_choice must be {"type": "function", "function": {"name": ...}}', "tool_choice")
    named = [t for t in tools if t.name == name]
    if not named:
        raise ToolRequestError(f"tool_choice names {name!r}, which is not among the tools", "tool_choice")
    return ToolChoice("required", tuple(named), False)
