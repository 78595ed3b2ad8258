"""Which tool-call syntax a model speaks, told from its chat template's text (as llama.cpp's
common_chat_templates_init does), and what follows from it: the grammar for `required` and for `auto`
(lazy: switched on by a trigger pattern once the model starts a call), how to read its output, and
what may be streamed before the call is known."""

from __future__ import annotations

import random
import re
import string
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from . import grammars, parse
from .spec import ToolChoice

# Trigger patterns are searched for in the text generated so far, after every token; the grammar
# starts where they match. They are plain, anchored or literal (llama.cpp runs std::regex on the whole
# text each time: a `[\s\S]*?` there cost 200 ms a token). They end on the call's fixed opening, so
# that the token completing them has little left over, and that is always something the grammar
# accepts (llama.cpp aborts when it is not).
_LLAMA3_START = '^[ \\t\\n]{0,8}(\\{(?: |\\n[ \\t]{0,20})?"name"(?: |\\n[ \\t]{0,20})?:)'


@dataclass(frozen=True)
class ToolGrammar:
    grammar: str
    triggers: tuple[str, ...] = ()  # empty: applies from the first token


@dataclass(frozen=True)
class Family:
    name: str
    native: bool  # the template itself renders tools, calls and results
    parser: Callable[[str], parse.Parsed | None]

    def grammar(self, choice: ToolChoice) -> ToolGrammar:
        tools, parallel, forced = choice.tools, choice.parallel, choice.forced
        if self.name == "hermes":
            return ToolGrammar(grammars.hermes_grammar(tools, parallel),
                               () if forced else (re.escape("<tool_call>"),))
        if self.name == "mistral":
            return ToolGrammar(grammars.mistral_grammar(tools, parallel),
                               () if forced else (re.escape("[TOOL_CALLS]"),))
        if self.name == "llama3":
            return ToolGrammar(grammars.llama3_grammar(tools),
                               () if forced else (re.escape("<|python_tag|>"), _LLAMA3_START))
        return ToolGrammar(grammars.generic_grammar(tools, parallel, forced))

    def shown(self, text: str) -> int:
        """How much of the output so far may be streamed as text (the rest may be a call)."""
        if self.name == "hermes":
            return parse.held_back(text, "<tool_call>")
        if self.name == "mistral":
            return parse.held_back(text, "[TOOL_CALLS]")
        if self.name == "llama3":
            head = text.lstrip(parse.WHITESPACE)
            if not head or head.startswith("{") or "<|python_tag|>".startswith(head[:14]):
                return 0
            return parse.held_back(text, "<|python_tag|>")
        return 0  # generic: the answer is one JSON document, read when it is complete

    def new_id(self) -> str:
        if self.name == "mistral":  # Mistral's template accepts 9 letters or digits only
            return "".join(random.choices(string.ascii_letters + string.digits, k=9))
        return f"call_{uuid.uuid4().hex[:24]}"


FAMILIES = {
    "hermes": Family("hermes", True, parse.parse_hermes),
    "llama3": Family("llama3", True, parse.parse_llama3),
    "mistral": Family("mistral", True, parse.parse_mistral),
    "generic": Family("generic", False, parse.parse_generic),
}


def detect(template: str) -> Family:
    if "<tool_call>" in template:
        return FAMILIES["hermes"]
    if "[TOOL_CALLS]" in template:
        return FAMILIES["mistral"]
    if "<|python_tag|>" in template or "<|start_header_id|>ipython" in template:
        return FAMILIES["llama3"]
    return FAMILIES["generic"]
