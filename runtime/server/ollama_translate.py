"""Ollama's API (docs/api.md) to and from the server's own shapes: request bodies in, the internal chat
request (OpenAI's chat completions body, which every dialect runs through chat_core) and the model's
facts out. No engine here: routes_ollama.py does the I/O."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .. import messages
from .errors import ApiError
from .schemas import ChatCompletionRequest

# The Ollama release whose API this follows. Clients gate features on /api/version (structured outputs
# since 0.5, tools since 0.3), so llmpack's own version number would read as an ancient Ollama.
OLLAMA_VERSION = "0.12.0"
DEFAULT_TAG = "latest"

# Options that size or place the model (llama.cpp's context and batch, threads, GPU layers, memory
# mapping): fixed when the server starts (-c, -b, -t, -ngl, --no-mmap), so a request's are accepted and
# ignored, as Ollama ignores options it does not know. num_ctx is among them: clients such as Open WebUI
# send one with every request, and refusing it would refuse them; a prompt that does not fit the
# server's context is refused anyway, with the counts.
LOAD_OPTIONS = ("num_ctx", "num_batch", "num_gpu", "main_gpu", "low_vram", "f16_kv", "logits_all", "vocab_only",
                "use_mmap", "use_mlock", "embedding_only", "num_thread", "numa", "num_keep")

# Ollama's option -> the internal request's field.
SAMPLING_OPTIONS = {"temperature": "temperature", "top_k": "top_k", "top_p": "top_p", "min_p": "min_p",
                    "seed": "seed", "repeat_penalty": "repeat_penalty", "presence_penalty": "presence_penalty",
                    "frequency_penalty": "frequency_penalty", "stop": "stop", "num_predict": "max_tokens"}
OPTION_OF_FIELD = {field: option for option, field in SAMPLING_OPTIONS.items()}


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Options(_Body):
    # Sampling options are checked against the internal request's bounds when it is built; unknown and
    # load-time ones are ignored (see LOAD_OPTIONS).
    model_config = ConfigDict(extra="allow")
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    seed: int | None = None
    num_predict: int | None = None
    stop: str | list[str] | None = None
    repeat_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None


class ToolCallFunction(_Body):
    name: str
    arguments: dict[str, Any] | str = Field(default_factory=dict)


class ToolCall(_Body):
    id: str | None = None
    function: ToolCallFunction


class Message(_Body):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = ""
    images: list[Any] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_name: str | None = None
    tool_call_id: str | None = None
    thinking: str | None = None


class _Generating(_Body):
    model: str | None = None
    stream: bool = True
    options: Options | None = None
    format: str | dict[str, Any] | None = None
    keep_alive: float | str | None = None  # the model stays loaded for the server's life: accepted, no effect
    think: bool | str | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None


class ChatBody(_Generating):
    messages: list[Message] = Field(default_factory=list)
    tools: list[dict[str, Any]] | None = None


class GenerateBody(_Generating):
    prompt: str | None = None
    system: str | None = None
    raw: bool = False
    images: list[Any] | None = None
    suffix: str | None = None
    template: str | None = None
    context: list[int] | None = None


class EmbedBody(_Body):
    model: str | None = None
    input: str | list[str] = Field(default_factory=list)
    truncate: bool = True
    dimensions: int | None = None
    options: Options | None = None
    keep_alive: float | str | None = None


class EmbeddingsBody(_Body):
    model: str | None = None
    prompt: str = ""
    options: Options | None = None
    keep_alive: float | str | None = None


class ShowBody(_Body):
    model: str | None = None
    name: str | None = None  # Ollama's older clients send the model as `name`
    verbose: bool = False


# -- model names ---------------------------------------------------------------------------------

def listed_name(served: str) -> str:
    """The served model as Ollama lists it: NAME:TAG, `latest` when the name has no tag."""
    return served if ":" in served.rsplit("/", 1)[-1] else f"{served}:{DEFAULT_TAG}"


def check_model(requested: str | None, served: str, aliases: tuple[str, ...] = ()) -> None:
    """A request for the served model (or one of its -a aliases), with or without its `:latest` tag (names
    compare without case, as Ollama's do); 400 without a model, 404 for another one."""
    if not requested:
        raise ApiError(400, messages.OLLAMA_MODEL_REQUIRED, param="model")
    if listed_name(requested).casefold() not in {listed_name(name).casefold() for name in (served, *aliases)}:
        raise ApiError(404, messages.OLLAMA_MODEL_NOT_FOUND.format(model=requested, served=listed_name(served)),
                       param="model", code="model_not_found")


# -- requests ------------------------------------------------------------------------------------

def refuse_thinking(body: _Generating, served: str) -> None:
    """Ollama's think: true, false, or a level ("low", "medium", "high"); anything else is a 400."""
    if body.think not in (None, True, False, "", "true", "false", "low", "medium", "high"):
        raise ApiError(400, messages.OLLAMA_NO_THINKING.format(model=listed_name(served)), param="think")


def think_fields(body: _Generating) -> dict[str, Any]:
    """think as llama.cpp's chat template variables: on or off, or a reasoning effort."""
    if body.think in (None, ""):
        return {}
    if body.think in (True, False, "true", "false"):
        return {"chat_template_kwargs": {"enable_thinking": body.think in (True, "true")}}
    return {"reasoning_effort": body.think}


def sampling_fields(body: _Generating) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    options = body.options
    if options is not None:
        for option, field in SAMPLING_OPTIONS.items():
            value = getattr(options, option)
            if value is None:
                continue
            if option == "num_predict" and value < 0:
                continue  # -1: until the end of generation, -2: until the context is full: no limit either way
            fields[field] = value
    if body.logprobs:
        fields["logprobs"] = True
        if body.top_logprobs:
            fields["top_logprobs"] = body.top_logprobs
    return fields


def response_format(fmt: str | dict[str, Any] | None) -> dict[str, Any] | None:
    if fmt in (None, ""):
        return None
    if fmt == "json":
        return {"type": "json_object"}
    if isinstance(fmt, dict):
        return {"type": "json_schema", "json_schema": {"name": "format", "schema": fmt}}
    raise ApiError(400, messages.OLLAMA_BAD_FORMAT.format(format=fmt), param="format")


def _arguments_text(arguments: dict[str, Any] | str) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)


def chat_messages(body: ChatBody) -> list[dict[str, Any]]:
    """Ollama's messages as OpenAI's. Tool results name their tool, not a call id: each is matched to the
    earliest unanswered call of that name (else the earliest unanswered call)."""
    out: list[dict[str, Any]] = []
    pending: list[tuple[str, str]] = []  # (id, name) of calls without a result yet
    for i, message in enumerate(body.messages):
        entry: dict[str, Any] = {"role": message.role, "content": _with_images(message.content or "", message.images,
                                                                            f"messages.{i}.images")}
        if message.role == "assistant" and message.tool_calls:
            calls = []
            for j, call in enumerate(message.tool_calls):
                call_id = call.id or f"call_{i}_{j}"
                calls.append({"id": call_id, "type": "function",
                              "function": {"name": call.function.name,
                                           "arguments": _arguments_text(call.function.arguments)}})
                pending.append((call_id, call.function.name))
            entry["tool_calls"] = calls
        elif message.role == "tool":
            match = message.tool_call_id or _answer(pending, message.tool_name)
            entry["tool_call_id"] = match or f"call_{i}"
            if message.tool_name:
                entry["name"] = message.tool_name
        out.append(entry)
    return out


def _answer(pending: list[tuple[str, str]], name: str | None) -> str | None:
    for k, (call_id, call_name) in enumerate(pending):
        if name is None or call_name == name:
            del pending[k]
            return call_id
    return pending.pop(0)[0] if pending else None


def chat_request(body: ChatBody, stream: bool) -> ChatCompletionRequest:
    data: dict[str, Any] = {"messages": chat_messages(body), "stream": stream, **sampling_fields(body), **think_fields(body)}
    fmt = response_format(body.format)
    if fmt is not None:
        data["response_format"] = fmt
    if body.tools:
        data["tools"] = body.tools
    return internal_request(data)


def generate_request(body: GenerateBody, stream: bool) -> ChatCompletionRequest:
    """/api/generate without `raw`: the prompt as the user's turn of the model's chat template (and
    `system` as the system prompt), as Ollama applies its template."""
    chat: list[dict[str, Any]] = []
    if body.system:
        chat.append({"role": "system", "content": body.system})
    chat.append({"role": "user", "content": _with_images(body.prompt or "", body.images, "images")})
    data: dict[str, Any] = {"messages": chat, "stream": stream, **sampling_fields(body), **think_fields(body)}
    fmt = response_format(body.format)
    if fmt is not None:
        data["response_format"] = fmt
    return internal_request(data)


def _with_images(text: str, images: list[Any] | None, param: str) -> str | list[dict[str, Any]]:
    """Ollama's base64 `images` as image_url parts after the text (chat_core reads and checks them)."""
    if not images:
        return text
    if not all(isinstance(image, str) for image in images):
        raise ApiError(400, f"{param}: each image must be a base64 string", param=param)
    return [{"type": "text", "text": text},
            *({"type": "image_url", "image_url": {"url": f"data:image/*;base64,{image}"}} for image in images)]


def refuse_generate_extras(body: GenerateBody) -> None:
    if body.images and body.raw:  # a raw prompt has no template to place them in
        raise ApiError(400, messages.OLLAMA_NO_IMAGES, param="images")
    if body.suffix:
        raise ApiError(400, messages.OLLAMA_NO_SUFFIX, param="suffix")
    if body.template:
        raise ApiError(400, messages.OLLAMA_NO_TEMPLATE, param="template")
    if body.context:
        raise ApiError(400, messages.OLLAMA_NO_CONTEXT, param="context")


def internal_request(data: dict[str, Any], kind: type[BaseModel] = ChatCompletionRequest) -> Any:
    """The internal request (a chat, or a completion for `raw`); a value out of its bounds is a 400
    naming Ollama's field."""
    try:
        return kind.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = [str(p) for p in first.get("loc", ())]
        if loc and loc[0] in OPTION_OF_FIELD:
            loc = ["options", OPTION_OF_FIELD[loc[0]], *loc[1:]]
        param = ".".join(loc) or None
        raise ApiError(400, f"{param}: {first.get('msg', 'invalid value')}" if param else "invalid request",
                       param=param) from None


# -- responses -----------------------------------------------------------------------------------

def created_at() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


DONE_REASONS = {"stop": "stop", "length": "length", "tool_calls": "stop"}


def tool_call(call_id: str, name: str, arguments: str, index: int) -> dict[str, Any] | None:
    """Ollama's tool call: the arguments as an object, not as JSON text. None when the text is no
    JSON object (a call cut short by num_predict)."""
    try:
        parsed = json.loads(arguments or "{}")
    except json.JSONDecodeError:
        return None
    if not isinstance(parsed, dict):
        return None
    return {"id": call_id, "function": {"index": index, "name": name, "arguments": parsed}}


def ollama_logprobs(entries: tuple | None) -> list[dict[str, Any]] | None:
    """The core's logprobs (OpenAI's content entries) in Ollama's shape."""
    if not entries:
        return None
    return [{"token": e["token"], "logprob": e["logprob"], "bytes": e.get("bytes"),
             "top_logprobs": [{"token": t["token"], "logprob": t["logprob"], "bytes": t.get("bytes")}
                              for t in e.get("top_logprobs") or []]} for e in entries]


def ndjson(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


# -- the model's facts (/api/tags, /api/show, /api/ps) -------------------------------------------

# GGUF's general.file_type (llama.cpp's llama_ftype) -> Ollama's quantization_level.
FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
              11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
              17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS",
              24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS",
              31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4"}
# Arrays as big as the vocabulary: Ollama leaves them out of model_info unless asked for verbose.
BULKY_KEYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type",
              "tokenizer.ggml.merges", "tokenizer.chat_template")


def details(metadata: dict[str, str]) -> dict[str, Any]:
    family = metadata.get("general.architecture", "")
    file_type = metadata.get("general.file_type", "")
    level = FILE_TYPES.get(int(file_type), f"type {file_type}") if file_type.isdigit() else ""
    return {"parent_model": "", "format": "gguf", "family": family, "families": [family] if family else None,
            "parameter_size": metadata.get("general.size_label", ""), "quantization_level": level}


def model_info(metadata: dict[str, str], verbose: bool) -> dict[str, Any]:
    """GGUF's metadata, numbers as numbers, as Ollama's model_info has it."""
    info: dict[str, Any] = {}
    for key, value in sorted(metadata.items()):
        if key.startswith(BULKY_KEYS) and not verbose:
            continue
        info[key] = _typed(value)
    return info


def _typed(value: str) -> Any:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(value, value)


def parameters_text(parameters: dict[str, Any]) -> str:
    """Ollama's `parameters`: one `name value` line each, a list repeating its name (stop)."""
    lines = []
    for name, value in parameters.items():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            shown = json.dumps(item) if isinstance(item, str) else item
            lines.append(f"{name:<30} {shown}")
    return "\n".join(lines)


def modelfile(name: str, template: str | None, parameters: dict[str, Any]) -> str:
    lines = [f"# Modelfile of {name}, served by llmpack from its embedded GGUF weights", f"FROM {name}"]
    if template:
        lines.append(f'TEMPLATE """{template}"""')
    for line in parameters_text(parameters).splitlines():
        lines.append(f"PARAMETER {line}")
    return "\n".join(lines) + "\n"
