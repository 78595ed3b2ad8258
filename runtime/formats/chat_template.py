"""Chat templates: renders a conversation into the prompt a model was trained on, with the model's own
Jinja template from its GGUF (sandboxed), or a built-in one.

The template is compiled once, when its formatter is made, in the environment Hugging Face's
transformers renders chat templates in (`_compile_jinja_template`): loop controls (`{% break %}`,
`{% continue %}`), the `{% generation %}` tag (Command-R7B), `raise_exception`, `strftime_now`, a
`tojson` that keeps non-ASCII text and takes `indent`, trim_blocks and lstrip_blocks. A template that
does not compile is one line at start, never an error on every request.

Some templates have no system role (Gemma's raises "System role not supported"; llama-cpp-python's
server answers HTTP 500 there). When a template rejects a system message, the system prompt is folded
into the first user turn instead, which is what those models were trained to read.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import jinja2
import jinja2.ext
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .. import messages as texts
from ..errors import UserError

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


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators=None,
            sort_keys: bool = False) -> str:
    # Jinja's own tojson escapes <, >, & and ' for HTML; a prompt needs the JSON a model was trained on.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


class GenerationExtension(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}` marks the assistant's text for training masks
    (transformers' AssistantTracker); rendering a prompt keeps its body unchanged."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.Scope(body).set_lineno(lineno)


def _environment() -> jinja2.Environment:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, loader=jinja2.BaseLoader(),
                                        extensions=[GenerationExtension, jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now)
    return env


def compile_template(template: str, source: str) -> jinja2.Template:
    """The compiled template, or TemplateError (one line, naming `source`) when it cannot compile."""
    try:
        return _environment().from_string(template)
    except jinja2.TemplateSyntaxError as exc:
        reason = f"line {exc.lineno}: {exc.message}" if exc.lineno else str(exc.message)
    except Exception as exc:  # noqa: BLE001 - any failure to compile is the template's, reported in one line
        reason = f"{type(exc).__name__}: {exc}"
    raise TemplateError(texts.CHAT_TEMPLATE_INVALID.format(source=source, reason=" ".join(reason.split())))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


@dataclass(frozen=True)
class ChatFormatter:
    """Renders conversations with one template, compiled once when the formatter is made (so a
    broken template fails there, at start)."""

    template: str
    bos_token: str = ""
    eos_token: str = ""
    stop: tuple[str, ...] = ()
    name: str = "gguf"
    fallback: bool = False  # the model has no template: this one (ChatML) stands in
    _compiled: jinja2.Template = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        source = "the model's chat template" if self.name == "gguf" else "--chat-template"
        object.__setattr__(self, "_compiled", compile_template(self.template, source))

    def llama_chat(self, engine: Any) -> Any:
        """llama.cpp's chat library for this template and `engine`'s model (runtime/formats/llama_chat.py),
        made once; None where the runtime carries no such library, or the engine has no model (a test's
        fake). Raises TemplateError when llama.cpp cannot read the template."""
        cached = self.__dict__.get("_llama")
        if cached is not None or "_llama" in self.__dict__:
            return cached
        from . import llama_chat

        chat = None
        model = getattr(engine, "model", None)
        if model is not None and llama_chat.available():
            try:
                chat = llama_chat.LlamaChat.from_model(model, None if self.name == "gguf" else self.template)
            except llama_chat.ChatFormatError as exc:
                raise TemplateError(texts.TEMPLATE_FAILED.format(reason=exc)) from None
        object.__setattr__(self, "_llama", chat)
        return chat

    @property
    def description(self) -> str:
        """Which template this is, for the chat's banner and /v1/models."""
        if self.fallback:
            return texts.TEMPLATE_FALLBACK
        return {"gguf": "the model's own", "custom": "--chat-template (Jinja)"}.get(self.name, self.name)

    def render(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True,
               tools: Sequence[Mapping[str, Any]] | None = None) -> str:
        """The prompt text for `messages` (dicts with role and content); `tools` (OpenAI function
        tools) reach the template as transformers' apply_chat_template passes them."""
        messages = [dict(m) for m in messages]
        extra = {"tools": [dict(t) for t in tools]} if tools else {}
        try:
            return self._render(messages, add_generation_prompt, **extra)
        except TemplateRejected as rejected:
            if not messages or messages[0].get("role") != "system":
                raise TemplateError(texts.TEMPLATE_REJECTED.format(reason=rejected)) from None
        try:
            return self._render(fold_system_prompt(messages), add_generation_prompt, **extra)
        except TemplateRejected as rejected:
            raise TemplateError(texts.TEMPLATE_REJECTED.format(reason=rejected)) from None

    def _render(self, messages: list[dict[str, Any]], add_generation_prompt: bool, **extra: Any) -> str:
        # As llama.cpp's common_chat_extra_context: today's date, which Llama 3.x's templates print as
        # "Today Date" (else their own fixed "26 Jul 2024").
        now = datetime.datetime.now()
        dates = {"date_string": now.strftime("%d %b %Y"), "datetime": now.strftime("%b %d %Y")}
        try:
            return self._compiled.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                         bos_token=self.bos_token, eos_token=self.eos_token, **{**dates, **extra})
        except TemplateRejected:
            raise
        except jinja2.TemplateError as exc:
            raise TemplateError(texts.TEMPLATE_FAILED.format(reason=_one_line(exc))) from None
        except Exception as exc:  # noqa: BLE001 - e.g. a TypeError inside the template: its fault, not a crash
            raise TemplateError(texts.TEMPLATE_FAILED.format(reason=f"{type(exc).__name__}: {_one_line(exc)}")) from None


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
        raise UserError(texts.TEMPLATE_UNKNOWN.format(name=override, built_in=", ".join(BUILT_IN)))
    if gguf_template:
        return "gguf", gguf_template
    return "chatml", CHATML


def stop_strings_for(template: str) -> tuple[str, ...]:
    return tuple(stop for stops in STOP_STRINGS.values() for stop in stops if stop in template)


def formatter_for(gguf_template: str | None, bos_token: str, eos_token: str, override: str | None) -> ChatFormatter:
    """The formatter a model should use: pass the engine's chat_template, bos_token and eos_token.
    Raises TemplateError when the template does not compile.

    A model without a template gets ChatML, in the server and in the terminal chat alike (as
    llama-server does; llamafile's chat would continue raw text instead). One rule for both, so the
    chat shows what an API client gets; ChatML, because chat clients send turns and expect turns
    back, and instruct models without an embedded template are most often ChatML-trained. The
    banner, a warning at start and /v1/models say so."""
    name, template = choose_template(gguf_template, override)
    return ChatFormatter(template, bos_token, eos_token, stop_strings_for(template), name,
                         fallback=not override and not gguf_template)


def check_override(override: str | None) -> None:
    """Fails now (UserError) when --chat-template names no template or does not compile, before a
    model is loaded."""
    if override:
        formatter_for(None, "", "", override)


def tokenize_prompt_text(text: str, bos_token: str) -> tuple[bool, bool]:
    """How to tokenize rendered chat text: (add_special, parse_special). Templates that write the BOS
    themselves must not get a second one; their control tokens are parsed as tokens."""
    return (not (bos_token and text.startswith(bos_token)), True)
