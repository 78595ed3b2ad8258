"""llama-server's answers from the engine's pieces: /completion's and /infill's result (plain, and the
events of a stream), with its stop_type, timings and completion_probabilities."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ..engine.interface import ServingEngine
from ..engine.types import GenerationRequest, Piece, Timings, TokenLogprob


def generation_settings(request: GenerationRequest, n_ctx: int, model: str,
                        eog_tokens: Sequence[int] = ()) -> dict[str, Any]:
    """`eog_tokens`: the end-of-generation tokens, which `ignore_eos` bans: llama-server lists them in
    `logit_bias` with a bias of null (-inf), after the request's own biases."""
    s = request.sampling
    biases = [{"token": token, "bias": None if math.isinf(bias) else bias} for token, bias in s.logit_bias]
    if s.ignore_eos:
        biases += [{"token": token, "bias": None} for token in eog_tokens]
    return {"logit_bias": biases, "n_ctx": n_ctx, "n_predict": request.max_tokens, "model": model, "temperature": s.temperature,
            "top_k": s.top_k, "top_p": s.top_p, "min_p": s.min_p, "repeat_penalty": s.repeat_penalty,
            "repeat_last_n": s.repeat_last_n, "presence_penalty": s.presence_penalty,
            "frequency_penalty": s.frequency_penalty, "seed": s.seed, "stop": list(request.stop),
            "grammar": s.grammar or "", "ignore_eos": s.ignore_eos, "n_probs": request.logprobs or 0,
            "samplers": [name for name, on in (("penalties", True), ("top_k", s.top_k > 0), ("top_p", s.top_p < 1),
                                               ("min_p", s.min_p > 0), ("temperature", True)) if on]}


def eog_tokens(engine: ServingEngine, request: GenerationRequest) -> tuple[int, ...]:
    """The tokens `ignore_eos` bans, when it is on (an engine without the list, a test's fake, has none)."""
    if not request.sampling.ignore_eos:
        return ()
    return tuple(getattr(engine, "end_of_generation_tokens", ()))


def probabilities(engine: ServingEngine, logprobs: Sequence[TokenLogprob]) -> list[dict[str, Any]]:
    def entry(token: int, logprob: float) -> dict[str, Any]:
        raw = engine.token_bytes(token)
        return {"id": token, "token": raw.decode("utf-8", "replace"), "bytes": list(raw), "logprob": logprob}

    return [{**entry(lp.token_id, lp.logprob), "top_logprobs": [entry(t, v) for t, v in lp.top]}
            for lp in logprobs]


def timings(t: Timings | None) -> dict[str, float]:
    if t is None:
        t = Timings(0, 0, 0.0, 0, 0.0)
    prompt_n = t.prompt_tokens - t.cached_tokens
    return {"cache_n": t.cached_tokens, "prompt_n": prompt_n, "prompt_ms": t.prompt_ms,
            "prompt_per_token_ms": t.prompt_ms / prompt_n if prompt_n else 0.0,
            "prompt_per_second": t.prompt_per_second, "predicted_n": t.generated_tokens,
            "predicted_ms": t.generation_ms,
            "predicted_per_token_ms": t.generation_ms / t.generated_tokens if t.generated_tokens else 0.0,
            "predicted_per_second": t.generation_per_second}


def stop_reason(piece: Piece) -> tuple[str, str]:
    """(stop_type, stopping_word) of the last piece: llama-server's "eos", "word" or "limit" ("none" when
    cut short)."""
    if piece.finish_reason == "length":
        return "limit", ""
    if piece.finish_reason != "stop":
        return "none", ""
    return ("word", piece.stop) if piece.stop else ("eos", "")


def final_result(engine: ServingEngine, model: str, request: GenerationRequest, prompt_text: str,
                 pieces: Sequence[Piece], text: str, streamed: bool, return_tokens: bool) -> dict[str, Any]:
    token_ids = [t for p in pieces for t in p.token_ids]
    last = pieces[-1] if pieces else Piece("", (), "stop")
    t = last.timings
    stop_type, word = stop_reason(last)
    result: dict[str, Any] = {
        "index": 0,
        # A stream has sent the text already: its last event carries none (as llama-server's).
        "content": "" if streamed else text,
        "tokens": [] if streamed or not return_tokens else token_ids,
        "id_slot": -1,  # requests are not pinned to slots here
        "stop": True, "model": model,
        "tokens_predicted": len(token_ids), "tokens_evaluated": len(request.prompt_tokens),
        "generation_settings": generation_settings(request, engine.n_ctx, model, eog_tokens(engine, request)),
        "prompt": prompt_text, "has_new_line": "\n" in text, "truncated": False,
        "stop_type": stop_type, "stopping_word": word,
        "tokens_cached": t.cached_tokens if t else 0,
        "timings": timings(t),
    }
    if request.logprobs is not None and not streamed:
        result["completion_probabilities"] = probabilities(engine, [lp for p in pieces for lp in p.logprobs])
    return result


def partial_result(engine: ServingEngine, request: GenerationRequest, piece: Piece, n_predicted: int) -> dict[str, Any]:
    result: dict[str, Any] = {"index": 0, "content": piece.text, "tokens": list(piece.token_ids), "stop": False,
                              "id_slot": -1, "tokens_predicted": n_predicted,
                              "tokens_evaluated": len(request.prompt_tokens)}
    if request.logprobs is not None and piece.logprobs:
        result["completion_probabilities"] = probabilities(engine, piece.logprobs)
    return result


def select_fields(result: dict[str, Any], fields: Sequence[str]) -> dict[str, Any]:
    """llama-server's response_fields: only the fields named, a nested one under its path as the key."""
    selected = {}
    for path in fields:
        value: Any = result
        for part in path.split("/"):
            if not isinstance(value, dict) or part not in value:
                break
            value = value[part]
        else:
            selected[path] = value
    return selected


def normalized(vector: Sequence[float]) -> list[float]:
    norm = math.sqrt(math.fsum(x * x for x in vector))
    return [x / norm for x in vector] if norm > 0 else list(vector)
