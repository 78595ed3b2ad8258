"""Request bodies, as pydantic models: what a client may send, with its types and bounds. A body that does
not fit is a 400 `invalid_request_error` naming the field (see errors.py). Unknown fields are ignored,
as OpenAI's clients send some we have no use for (`user`, `metadata`, ...)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class ContentPart(_Body):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None  # an assistant's earlier calls (OpenAI's shape)
    tool_call_id: str | None = None  # a tool message: the call it answers
    reasoning_content: str | None = None  # an assistant's earlier thinking (llama-server's field)


class StreamOptions(_Body):
    include_usage: bool = False


class JsonSchemaSpec(_Body):
    name: str = "response"
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Body):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None
    # llama.cpp's server also accepts {"type": "json_object", "schema": {...}}.
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")


class SamplingFields(_Body):
    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=0)
    temperature: float | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0, le=2**31 - 1)  # a C int32 in llama.cpp
    min_p: float | None = Field(default=None, ge=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    repeat_penalty: float | None = Field(default=None, ge=0)  # llama.cpp's extension
    ignore_eos: bool | None = None  # llama.cpp's extension: end-of-generation tokens banned
    n: int | None = Field(default=None, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    grammar: str | None = None  # llama.cpp's extension: a GBNF grammar
    user: str | None = None
    # Token id (as a string, OpenAI's shape; llama.cpp also takes ints) -> bias added to its logit.
    logit_bias: dict[str, float] | None = None


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=0)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    # Prefill: continue the last assistant message instead of starting a new one (vLLM's and llama.cpp's
    # names for it).
    continue_final_message: bool = False
    add_generation_prompt: bool = True
    # llama.cpp's extensions: a JSON schema the answer must follow (as response_format's), and `verbose`,
    # which adds `__verbose` (the rendered prompt) to the answer.
    json_schema: dict[str, Any] | None = None
    verbose: bool = False
    # Thinking, as llama-server: where thoughts go, and more variables for the chat template.
    reasoning_format: str | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    reasoning_budget_tokens: int | None = Field(default=None, ge=-1)
    thinking_budget_tokens: int | None = Field(default=None, ge=-1)
    reasoning_budget_message: str | None = None
    # OpenAI fields that change the output and that this server cannot honour: refused by name when
    # set (translate.refuse_unsupported), never ignored.
    audio: Any = None
    modalities: list[str] | None = None
    functions: Any = None
    function_call: Any = None
    web_search_options: Any = None
    reasoning_effort: Any = None
    verbosity: Any = None


class CompletionRequest(SamplingFields):
    prompt: str | list[int] | list[str]
    logprobs: int | None = Field(default=None, ge=0, le=20)
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = Field(default=None, ge=1)


class EmbeddingRequest(_Body):
    # A string, token ids, a list of either, or llama-server's shapes (llamacpp_translate.embedding_inputs).
    input: Any = None
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None


class TokenizeRequest(_Body):
    content: str
    add_special: bool = False
    parse_special: bool = True
    with_pieces: bool = False


class DetokenizeRequest(_Body):
    tokens: list[int]
