"""llama.cpp's native server API (llama-server's /completion, /infill, /props, /slots, /embeddings,
/rerank): its request bodies to the engine's GenerationRequest, and the engine's pieces back to its
response shapes. Field names follow llama-server's README (tools/server/README.md); where ours differ,
the comment says why.

Errors on these routes take llama-server's shape, `{"error": {"code": 400, "message", "type"}}`, which
its clients (the web UI, llama.vim, llama.vscode) read; OpenAI's routes keep OpenAI's.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..engine.interface import ServingEngine
from ..engine.types import (
    GenerationRequest,
    SamplingParams,
)
from ..flags.settings import Settings
from .errors import ApiError, error_payload, llama_shape
from .translate import check_token_ids, schema_grammar

# llama-server's sampler names (common_sampler_types_from_names, with its aliases), and the place of each
# in our chain. Ours is fixed: penalties, top-k, top-p, min-p, temperature. A sampler we do not have
# (dry, typ_p, xtc, top_n_sigma) does nothing at llama-server's defaults, so naming it changes nothing.
SAMPLER_ORDER = {"penalties": 0, "top_k": 1, "top_p": 2, "min_p": 3, "temperature": 4}
SAMPLER_ALIASES = {"top-k": "top_k", "top-p": "top_p", "nucleus": "top_p", "min-p": "min_p", "temp": "temperature",
                   "typ_p": None, "typ-p": None, "typical_p": None, "typical": None, "dry": None, "xtc": None,
                   "top_n_sigma": None, "top-n-sigma": None, "infill": None}
# llama-server's one-letter sampler sequence (--sampling-seq), the same samplers.
SAMPLER_LETTERS = {"e": "penalties", "k": "top_k", "p": "top_p", "m": "min_p", "t": "temperature",
                   "d": None, "y": None, "x": None, "s": None, "i": None}


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


# llama-server's samplers that we do not have, at the values that switch them off: a request that switches
# one on is refused by name rather than answered as if it had not asked.
INACTIVE_SAMPLERS = {"mirostat": 0, "dry_multiplier": 0.0, "xtc_probability": 0.0, "typical_p": 1.0,
                     "typ_p": 1.0, "dynatemp_range": 0.0, "top_n_sigma": -1.0}


class CompletionBody(_Body):
    # Fields kept, so that INACTIVE_SAMPLERS can be checked; the others llama-server reads and we need not
    # (t_max_predict_ms and n_indent, which llama.vim sends, are limits on how long a completion runs).
    model_config = ConfigDict(extra="allow")
    prompt: Any = None
    n_predict: int | None = Field(default=None, ge=-1)
    max_tokens: int | None = Field(default=None, ge=-1)  # llama-server reads it when n_predict is absent
    temperature: float | None = Field(default=None, ge=0)
    top_k: int | None = Field(default=None, ge=0, le=2**31 - 1)
    top_p: float | None = Field(default=None, ge=0, le=1)
    min_p: float | None = Field(default=None, ge=0, le=1)
    repeat_penalty: float | None = Field(default=None, ge=0)
    repeat_last_n: int | None = Field(default=None, ge=-1, le=2**31 - 1)
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = Field(default=None, ge=-1, le=2**32 - 1)
    stop: str | list[str] | None = None
    grammar: str | None = None
    json_schema: dict[str, Any] | None = None
    ignore_eos: bool = False
    n_probs: int = Field(default=0, ge=0, le=100)
    post_sampling_probs: bool = False
    samplers: list[str] | str | None = None
    stream: bool = False
    cache_prompt: bool = True  # accepted: a sequence always reuses the longest prefix it already holds
    return_tokens: bool = False
    id_slot: int = -1  # accepted: requests go to the sequence whose cache shares most of the prompt
    logit_bias: list[list[Any]] | dict[str, Any] | None = None
    response_fields: list[str] | None = None  # the answer reduced to these ("timings/prompt_n": nested)


class ExtraChunk(_Body):
    filename: str = ""
    text: str


class InfillBody(CompletionBody):
    input_prefix: str = ""
    input_suffix: str = ""
    input_extra: list[ExtraChunk] = []


class EmbeddingsBody(_Body):
    content: Any = None
    input: Any = None  # llama-server takes either


class RerankBody(_Body):
    query: str
    documents: list[str] | None = Field(default=None, min_length=1)
    # Hugging Face TEI's shape (llama-server takes it too): `texts` instead of `documents`, answered as a
    # bare list of {"index", "score"} (with "text" when return_text).
    texts: list[str] | None = Field(default=None, min_length=1)
    return_text: bool = False
    top_n: int | None = Field(default=None, ge=0)


def parse(model: type[BaseModel], raw: bytes) -> Any:
    """The body, or a 400 in llama-server's words: invalid JSON, or the first field that does not fit."""
    try:
        data = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise ApiError(400, f"\"{where}\": {first.get('msg', 'invalid value')}", param=where) from None


def llama_error(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """llama-server's error shape: the HTTP status as `code`, a message and a type."""
    status, payload = error_payload(exc)
    return status, llama_shape(payload, status)


# -- prompts ---------------------------------------------------------------------------------------

def _mixed_tokens(engine: ServingEngine, items: Sequence[Any], param: str, add_special: bool,
                  parse_special: bool) -> list[int]:
    """llama-server's tokenize_mixed: strings tokenized (only the first element gets BOS), numbers kept
    as token ids."""
    tokens: list[int] = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            tokens += engine.tokenize(item, add_special and i == 0, parse_special)
        elif isinstance(item, int) and not isinstance(item, bool):
            tokens += check_token_ids(engine, [item], f"{param}.{i}")
        else:
            raise ApiError(400, f"\"{param}\" must be a string, a list of tokens, or a list of mixed strings & tokens",
                           param=param)
    return tokens


def prompt_tokens(engine: ServingEngine, prompt: Any, add_special: bool = True, parse_special: bool = True,
                  param: str = "prompt", allow_empty: bool = False) -> list[int]:
    """A string, token ids, or a mixed list. llama-server also takes several prompts in one request and
    answers an array; we serve one per request (the API's clients send one), and say so."""
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]
    if isinstance(prompt, str):
        tokens = engine.tokenize(prompt, add_special, parse_special)  # "" is BOS alone, where the model adds one
    elif isinstance(prompt, list) and not any(isinstance(p, list) for p in prompt) and (
            not prompt or any(isinstance(p, int) for p in prompt) or len(prompt) == 1):
        tokens = _mixed_tokens(engine, prompt, param, add_special, parse_special)
    elif isinstance(prompt, list):
        raise ApiError(400, f"only one prompt per request is supported: send the {len(prompt)} prompts "
                            "as separate requests", param=param)
    elif prompt is None and allow_empty:
        tokens = []
    else:
        raise ApiError(400, f"\"{param}\" must be a string, a list of tokens, or a list of mixed strings & tokens",
                       param=param)
    if not tokens and not allow_empty:
        raise ApiError(400, f"\"{param}\" must not be empty", param=param)
    return tokens


def embedding_inputs(value: Any, param: str) -> list[Any]:
    """llama-server's shapes of an embeddings request (and of /completion's prompts): one input (a string, token ids, ids mixed with
    strings, {"prompt_string": TEXT} or {"content": [text parts]}), or a list of such inputs (a list
    with no token id at its top level)."""
    if value is None:
        raise ApiError(400, f"\"{param}\" (or \"content\") is required", param=param)
    if isinstance(value, list) and not any(isinstance(v, int) and not isinstance(v, bool) for v in value):
        if not value:
            raise ApiError(400, f"\"{param}\" must not be empty", param=param)
        return value
    return [value]


def embedding_tokens(engine: ServingEngine, item: Any, param: str, parse_special: bool = False) -> list[int]:
    """One embeddings input's tokens; an object is read for its text (llama-server's `prompt_string`, or
    OpenAI's content parts, which must all be text: this model reads no images, audio or video)."""
    if isinstance(item, dict):
        if "content" in item:
            parts = item["content"]
            if not isinstance(parts, list):
                raise ApiError(400, f"\"{param}.content\" must be a list of content parts", param=f"{param}.content")
            texts = []
            for j, part in enumerate(parts):
                if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                    raise ApiError(400, "only text parts can be embedded: this model reads no images, audio or video",
                                   param=f"{param}.content.{j}")
                texts.append(part["text"])
            item = "".join(texts)
        elif "prompt_string" in item and "multimodal_data" not in item:
            item = item["prompt_string"]
        else:
            raise ApiError(400, f"\"{param}\" as an object needs \"content\" (text parts) or \"prompt_string\"",
                           param=param)
    if isinstance(item, list) and any(isinstance(v, list) for v in item):
        raise ApiError(400, f"\"{param}\" must be a string, token ids, or token ids mixed with strings", param=param)
    return prompt_tokens(engine, item, True, parse_special, param=param)


def infill_tokens(engine: ServingEngine, body: InfillBody, n_predict: int) -> list[int]:
    """llama-server's format_infill (repository-level FIM, arXiv 2409.12186):
    [FIM_REP]myproject\\n [FIM_SEP]file\\n chunk ... [FIM_SEP]filename\\n [FIM_PRE]prefix prompt [FIM_SUF]suffix [FIM_MID],
    the prefix and suffix cut to fit a batch (3:1), the extra chunks to fill the rest of the context."""
    fim = engine.fim_tokens

    def tok(text: str) -> list[int]:
        return engine.tokenize(text, False, False) if text else []

    extra: list[int] = []
    if fim.rep is not None:
        extra += [fim.rep, *tok("myproject\n")]
    for chunk in body.input_extra:
        if fim.sep is not None:
            extra += [fim.sep, *tok(chunk.filename + "\n")]
        else:
            extra += tok("\n\n--- snippet ---\n\n")
        extra += tok(chunk.text)
    if fim.sep is not None:
        extra += [fim.sep, *tok("filename\n")]
    prompt = prompt_tokens(engine, body.prompt, False, True, allow_empty=True) if body.prompt else []
    prefix, suffix = tok(body.input_prefix), tok(body.input_suffix)
    n_batch = engine.config.n_batch
    n_prefix = min(len(prefix), 3 * (n_batch // 4))
    n_suffix = min(len(suffix), max(0, n_batch // 4 - (2 + len(prompt))))
    n_extra = min(max(0, engine.n_ctx - n_batch - 2 * max(n_predict, 0)), len(extra))
    bos = engine.tokenize("", True, False)  # [BOS] when the vocabulary adds one
    return [*extra[len(extra) - n_extra:], *bos, fim.pre, *prefix[len(prefix) - n_prefix:], *prompt,
            fim.suf, *suffix[:n_suffix], fim.mid]


# -- sampling --------------------------------------------------------------------------------------

def _sampler_names(samplers: list[str] | str) -> list[str | None]:
    if isinstance(samplers, str):
        names = []
        for letter in samplers:
            if letter not in SAMPLER_LETTERS:
                raise ApiError(400, f"unknown sampler {letter!r} in \"samplers\"", param="samplers")
            names.append(SAMPLER_LETTERS[letter])
        return names
    names = []
    for name in samplers:
        key = name.lower()
        if key in SAMPLER_ORDER:
            names.append(key)
        elif key in SAMPLER_ALIASES:
            names.append(SAMPLER_ALIASES[key])
        else:
            raise ApiError(400, f"unknown sampler {name!r} in \"samplers\"", param="samplers")
    return names


def apply_samplers(sampling: SamplingParams, samplers: list[str] | str) -> SamplingParams:
    """A sampler left out of the list is switched off (as in llama-server); the order of those named
    must be ours, since our chain's order is fixed."""
    named = [n for n in _sampler_names(samplers) if n is not None]
    if [SAMPLER_ORDER[n] for n in named] != sorted(SAMPLER_ORDER[n] for n in named):
        raise ApiError(400, "\"samplers\": this server applies its samplers in one order: "
                            f"{', '.join(SAMPLER_ORDER)}; list them in that order (any may be left out)",
                       param="samplers")
    off: dict[str, Any] = {}
    if "penalties" not in named:
        off.update(repeat_penalty=1.0, presence_penalty=0.0, frequency_penalty=0.0)
    if "top_k" not in named:
        off["top_k"] = 0
    if "top_p" not in named:
        off["top_p"] = 1.0
    if "min_p" not in named:
        off["min_p"] = 0.0
    if "temperature" not in named and sampling.temperature > 0:
        off["temperature"] = 1.0  # no temperature sampler: the distribution as the model gives it
    return dataclasses.replace(sampling, **off)


def logit_bias(engine: ServingEngine, value: list[list[Any]] | dict[str, Any] | None) -> tuple[tuple[int, float], ...]:
    """llama-server's logit_bias: [[token, bias], ...] or {token: bias}, a token given by id or as text (all
    of its tokens), a bias of false banning it."""
    pairs = value.items() if isinstance(value, dict) else value or []
    biases: dict[int, float] = {}
    for i, pair in enumerate(pairs):
        pair = list(pair)
        if len(pair) != 2 or not isinstance(pair[1], (int, float)) or pair[1] is True:
            raise ApiError(400, "\"logit_bias\" pairs are [token, bias], the bias a number or false", param=f"logit_bias.{i}")
        token, bias = pair
        bias = -math.inf if bias is False else float(bias)
        if isinstance(token, str) and token.lstrip("-").isdigit():
            token = int(token)
        ids = [token] if isinstance(token, int) and not isinstance(token, bool) else (
            engine.tokenize(token, False, False) if isinstance(token, str) else None)
        if ids is None:
            raise ApiError(400, "\"logit_bias\" tokens are ids or text", param=f"logit_bias.{i}")
        for token_id in check_token_ids(engine, ids, f"logit_bias.{i}"):
            biases[token_id] = bias
    return tuple(biases.items())


def generation_request(settings: Settings, base: SamplingParams, body: CompletionBody,
                       tokens: list[int], engine: ServingEngine) -> GenerationRequest:
    for name, off in INACTIVE_SAMPLERS.items():
        value = (body.model_extra or {}).get(name)
        if value is not None and value != off:
            raise ApiError(400, f"\"{name}\" is not supported: this server has no such sampler (leave it out, "
                                f"or send {off})", param=name)
    if body.grammar and body.json_schema is not None:
        raise ApiError(400, "Either \"json_schema\" or \"grammar\" can be specified, but not both", param="grammar")
    if body.post_sampling_probs:
        # Our probabilities are the model's, before sampling truncates the distribution.
        raise ApiError(400, "\"post_sampling_probs\" is not supported: n_probs gives the model's log-probabilities "
                            "before sampling", param="post_sampling_probs")
    overrides: dict[str, Any] = {name: getattr(body, name) for name in (
        "temperature", "top_k", "top_p", "min_p", "repeat_penalty", "repeat_last_n", "presence_penalty",
        "frequency_penalty", "seed") if getattr(body, name) is not None}
    grammar = body.grammar or None
    if body.json_schema is not None:
        grammar = schema_grammar(body.json_schema, "json_schema")
    if grammar is not None:
        overrides["grammar"] = grammar
    if body.logit_bias:
        overrides["logit_bias"] = logit_bias(engine, body.logit_bias)
    if body.ignore_eos:
        if grammar or base.grammar:
            # llama.cpp's grammar aborts the process once its document is complete and only EOS may follow.
            raise ApiError(400, "\"ignore_eos\" cannot be combined with a grammar: once the grammar's text is "
                                "complete, only the end of generation may follow", param="ignore_eos")
        overrides["ignore_eos"] = True
    sampling = dataclasses.replace(base, **overrides)
    if body.samplers is not None:
        sampling = apply_samplers(sampling, body.samplers)
    n_predict = body.n_predict if body.n_predict is not None else body.max_tokens
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    return GenerationRequest(tuple(tokens), settings.n_predict if n_predict is None else n_predict, sampling,
                             tuple(dict.fromkeys(s for s in stop if s)), body.n_probs if body.n_probs > 0 else None)
