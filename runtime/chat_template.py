"""Chat templates: renders a conversation into the prompt a model was trained on, with the model's own
Jinja template from its GGUF (sandboxed), or a built-in one.

Some templates have no system role (Gemma's raises "System role not supported"; llama-cpp-python's
server answers HTTP 500 there). When a template rejects a system message, the system prompt is folded
into the first user turn instead, which is what those models were trained to read.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import UserError

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
GEMMA = (
    "{{ bos_token }}{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
LLAMA3 = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
BUILT_IN = {"chatml": CHATML, "gemma": GEMMA, "llama3": LLAMA3}
# End-of-turn markers that may not be end-of-generation tokens in a model's vocabulary.
STOP_STRINGS = {"chatml": ("<|im_end|>",), "gemma": ("<end_of_turn>",), "llama3": ("<|eot_id|>",)}


class TemplateRejected(Exception):
    """Raised by a template's own `raise_exception(...)` (e.g. Gemma on a system message)."""


class TemplateError(UserError):
    """The template could not render this conversation (a broken template, or roles out of order)."""


def _raise_exception(message: str) -> None:
    raise TemplateRejected(message)


def _strftime_now(fmt: str) -> str:
    return datetime.datetime.now().strftime(fmt)


@dataclass(frozen=True)
class ChatFormatter:
    template: str
    bos_token: str = ""
    eos_token: str = ""
    stop: tuple[str, ...] = ()
    name: str = "gguf"

    def _compiled(self) -> jinja2.Template:
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, loader=jinja2.BaseLoader())
        env.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now)
        return env.from_string(self.template)

    def render(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True) -> str:
        """The prompt text for `messages` (dicts with role and content)."""
        messages = [dict(m) for m in messages]
        template = self._compiled()
        try:
            return self._render(template, messages, add_generation_prompt)
        except TemplateRejected as rejected:
            if not messages or messages[0].get("role") != "system":
                raise TemplateError(f"error: the chat template rejected the conversation: {rejected}") from None
        try:
            return self._render(template, fold_system_prompt(messages), add_generation_prompt)
        except TemplateRejected as rejected:
            raise TemplateError(f"error: the chat template rejected the conversation: {rejected}") from None

    def _render(self, template: jinja2.Template, messages: list[dict[str, Any]], add_generation_prompt: bool) -> str:
        try:
            return template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                   bos_token=self.bos_token, eos_token=self.eos_token)
        except TemplateRejected:
            raise
        except jinja2.TemplateError as exc:
            raise TemplateError(f"error: the chat template failed: {exc}") from None


def fold_system_prompt(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Merges a leading system message into the first user message (or makes it one)."""
    system, rest = messages[0], [dict(m) for m in messages[1:]]
    if rest and rest[0].get("role") == "user":
        rest[0]["content"] = f"{system.get('content', '')}\n\n{rest[0].get('content', '')}"
        return rest
    return [{"role": "user", "content": system.get("content", "")}, *rest]


def choose_template(gguf_template: str | None, override: str | None) -> tuple[str, str]:
    """(name, template): --chat-template (a built-in name or Jinja text), else the GGUF's, else chatml."""
    if override:
        if override in BUILT_IN:
            return override, BUILT_IN[override]
        if "{{" in override or "{%" in override:
            return "custom", override
        raise UserError(f"error: --chat-template: unknown template {override!r} (built-in: {', '.join(BUILT_IN)}, or Jinja text)")
    if gguf_template:
        return "gguf", gguf_template
    return "chatml", CHATML


def stop_strings_for(template: str) -> tuple[str, ...]:
    return tuple(stop for stops in STOP_STRINGS.values() for stop in stops if stop in template)


def formatter_for(gguf_template: str | None, bos_token: str, eos_token: str, override: str | None) -> ChatFormatter:
    """The formatter a model should use: pass the engine's chat_template, bos_token and eos_token."""
    name, template = choose_template(gguf_template, override)
    return ChatFormatter(template, bos_token, eos_token, stop_strings_for(template), name)


def tokenize_prompt_text(text: str, bos_token: str) -> tuple[bool, bool]:
    """How to tokenize rendered chat text: (add_special, parse_special). Templates that write the BOS
    themselves must not get a second one; their control tokens are parsed as tokens."""
    return (not (bos_token and text.startswith(bos_token)), True)
