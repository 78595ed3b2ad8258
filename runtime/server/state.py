"""What the server's routes share, kept on `app.state`: the engine (possibly still loading) with its chat
formatter, and the counters behind /metrics."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..formats.chat_template import ChatFormatter, formatter_for
from ..engine.interface import ServingEngine
from ..flags.settings import Settings
from ..plan import ModelNames, model_names

if TYPE_CHECKING:
    from ..engine.scheduler import SchedulerStats


class EngineHolder:
    """The engine once it is loaded. The server starts listening before the weights are loaded, so
    routes ask `holder.engine` and answer 503 while it is None."""

    def __init__(self, settings: Settings, names: ModelNames | None = None) -> None:
        self._settings = settings
        # Decided once, in plan.py; without a plan (the tests' apps), from the flags alone.
        self.names = names if names is not None else model_names(settings)
        self.engine: ServingEngine | None = None
        self.formatter: ChatFormatter | None = None
        self.error: BaseException | None = None

    @classmethod
    def loaded(cls, settings: Settings, engine: ServingEngine, formatter: ChatFormatter | None = None,
               names: ModelNames | None = None) -> EngineHolder:
        holder = cls(settings, names)
        holder.set_engine(engine, formatter)
        return holder

    def set_engine(self, engine: ServingEngine, formatter: ChatFormatter | None = None) -> None:
        """`formatter`: the one the caller compiled at start (the default mode shares the chat's);
        else it is made here, once. Raises TemplateError when the template does not compile."""
        self.formatter = formatter or formatter_for(engine.chat_template, engine.bos_token, engine.eos_token,
                                                    self._settings.chat_template)
        self.engine = engine

    def set_error(self, error: BaseException) -> None:
        self.error = error

    @property
    def ready(self) -> bool:
        return self.engine is not None

    @property
    def model_name(self) -> str:
        """The model's id in the API (/v1/models, responses' `model`, Ollama's tags): see plan.model_names."""
        return self.names.id(self.gguf_name)

    @property
    def gguf_name(self) -> str:
        """The GGUF's `general.name`, for /props."""
        return self.engine.model_name if self.engine is not None else ""


def scheduler_stats(engine: ServingEngine | None) -> SchedulerStats | None:
    """The engine's scheduler snapshot, or None for an engine without one (the tests' fakes): an
    optional extra for /metrics and /health, so it stays out of the ServingEngine Protocol that every
    fake must implement."""
    stats = getattr(engine, "scheduler_stats", None)
    return stats() if callable(stats) else None


@dataclass
class Metrics:
    """Counters for /metrics. Updated from generation threads, hence the lock."""

    started: float = field(default_factory=time.time)
    requests: dict[str, int] = field(default_factory=dict)
    errors: dict[int, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    cached_tokens: int = 0  # of prompt_tokens, found in the KV cache (not decoded)
    generated_tokens: int = 0
    prompt_seconds: float = 0.0
    generation_seconds: float = 0.0
    last_prompt_per_second: float = 0.0
    last_generation_per_second: float = 0.0
    queued: int = 0  # submitted, no token out yet (waiting for the engine, or evaluating the prompt)
    generating: int = 0
    cancelled: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count_request(self, route: str) -> None:
        with self._lock:
            self.requests[route] = self.requests.get(route, 0) + 1

    def count_error(self, status: int) -> None:
        with self._lock:
            self.errors[status] = self.errors.get(status, 0) + 1

    def add(self, **deltas: float) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)

    def finished(self, prompt_tokens: int, prompt_ms: float, generation_ms: float,
                 prompt_per_second: float, generation_per_second: float, cached_tokens: int = 0) -> None:
        with self._lock:
            self.prompt_tokens += prompt_tokens
            self.cached_tokens += cached_tokens
            self.prompt_seconds += prompt_ms / 1000
            self.generation_seconds += generation_ms / 1000
            if prompt_per_second:
                self.last_prompt_per_second = prompt_per_second
            if generation_per_second:
                self.last_generation_per_second = generation_per_second

    def render(self, model_loaded: bool, stats: SchedulerStats | None = None) -> str:
        """Prometheus text exposition format (version 0.0.4): llama-server's `llamacpp:` metrics, under
        its names, for load balancers and autoscalers written against it, then our own."""
        with self._lock:
            rows = self._llamacpp_rows(stats) + self._own_rows(model_loaded) + _engine_rows(stats)
        lines: list[str] = []
        for name, kind, help_text, samples in rows:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
            lines += [f"{name}{labels} {_number(value)}" for labels, value in samples]
        return "\n".join(lines) + "\n"

    def _llamacpp_rows(self, stats: SchedulerStats | None) -> list[tuple[str, str, str, list[tuple[str, float]]]]:
        # Without a scheduler (not loaded yet, or a fake engine) the server's own counts stand in.
        running = stats.running if stats else self.generating + self.queued
        waiting = stats.waiting if stats else 0
        kv_tokens = stats.kv_tokens if stats else 0
        kv_ratio = kv_tokens / stats.kv_capacity if stats and stats.kv_capacity else 0.0
        processed = self.prompt_tokens - self.cached_tokens  # llama-server's: decoded, the cached apart
        spec = stats.spec if stats else None
        rows = [
            ("prompt_tokens_total", "counter", "Number of prompt tokens processed.", processed),
            ("prompt_tokens_cached_total", "counter", "Number of prompt tokens reused from the KV cache.",
             self.cached_tokens),
            ("prompt_seconds_total", "counter", "Prompt process time", self.prompt_seconds),
            ("tokens_predicted_total", "counter", "Number of generation tokens processed.", self.generated_tokens),
            ("tokens_predicted_seconds_total", "counter", "Predict process time", self.generation_seconds),
            ("n_decode_total", "counter", "Total number of llama_decode() calls", stats.n_decode if stats else 0),
            ("n_tokens_max", "counter", "Largest observed n_tokens.", stats.kv_capacity if stats else 0),
            # --spec-type's counts (0 without it), under llama-server's names.
            ("spec_decode_num_draft_tokens_total", "counter", "Number of draft tokens generated.", spec.drafted if spec else 0),
            ("spec_decode_num_accepted_tokens_total", "counter", "Number of draft tokens accepted.", spec.accepted if spec else 0),
            ("spec_decode_num_drafts_total", "counter", "Number of drafts generated.", spec.drafts if spec else 0),
            ("prompt_tokens_seconds", "gauge", "Average prompt throughput in tokens/s.",
             processed / self.prompt_seconds if self.prompt_seconds else 0.0),
            ("predicted_tokens_seconds", "gauge", "Average generation throughput in tokens/s.",
             self.generated_tokens / self.generation_seconds if self.generation_seconds else 0.0),
            ("kv_cache_usage_ratio", "gauge", "KV-cache usage. 1 means 100 percent usage.", kv_ratio),
            ("kv_cache_tokens", "gauge", "KV-cache tokens.", kv_tokens),
            ("requests_processing", "gauge", "Number of requests processing.", running),
            ("requests_deferred", "gauge", "Number of requests deferred.", waiting),
            ("n_busy_slots_per_decode", "gauge", "Average number of busy slots per llama_decode() call.",
             running),
        ]
        return [(f"llamacpp:{name}", kind, help_text, [("", value)]) for name, kind, help_text, value in rows]

    def _own_rows(self, model_loaded: bool) -> list[tuple[str, str, str, list[tuple[str, float]]]]:
        return [
            ("llmpack_requests_total", "counter", "requests received, by route",
             [(f'{{route="{route}"}}', n) for route, n in sorted(self.requests.items())] or [("", 0)]),
            ("llmpack_errors_total", "counter", "error responses, by HTTP status",
             [(f'{{status="{status}"}}', n) for status, n in sorted(self.errors.items())] or [("", 0)]),
            ("llmpack_prompt_tokens_total", "counter", "prompt tokens processed", [("", self.prompt_tokens)]),
            ("llmpack_generated_tokens_total", "counter", "tokens generated", [("", self.generated_tokens)]),
            ("llmpack_prompt_seconds_total", "counter", "time spent evaluating prompts", [("", self.prompt_seconds)]),
            ("llmpack_generation_seconds_total", "counter", "time spent generating tokens",
             [("", self.generation_seconds)]),
            ("llmpack_prompt_tokens_per_second", "gauge", "prompt speed of the last request",
             [("", self.last_prompt_per_second)]),
            ("llmpack_generation_tokens_per_second", "gauge", "generation speed of the last request",
             [("", self.last_generation_per_second)]),
            ("llmpack_requests_queued", "gauge", "generation requests waiting (for the engine or their prompt)",
             [("", self.queued)]),
            ("llmpack_requests_generating", "gauge", "generation requests producing tokens now",
             [("", self.generating)]),
            ("llmpack_requests_cancelled_total", "counter", "generations stopped because the client went away",
             [("", self.cancelled)]),
            ("llmpack_model_loaded", "gauge", "1 once the weights are loaded", [("", int(model_loaded))]),
            ("llmpack_uptime_seconds", "gauge", "seconds since the server started", [("", time.time() - self.started)]),
        ]


def _engine_rows(stats: SchedulerStats | None) -> list[tuple[str, str, str, list[tuple[str, float]]]]:
    """The KV pool and --cache-ram's prompt cache (runtime/engine/prompt_cache.py)."""
    cache = stats.prompt_cache if stats else None
    rows = [("llmpack_kv_unified", "gauge", "1 when the sequences share one KV pool (-kvu)", int(bool(stats and stats.kv_unified))),
            ("llmpack_prompt_cache_entries", "gauge", "prompts held in host memory (--cache-ram)", stats.prompt_cache_entries if stats else 0),
            ("llmpack_prompt_cache_bytes", "gauge", "host memory the prompt cache holds", stats.prompt_cache_bytes if stats else 0)]
    for name, help_text in (("saved", "sequences saved to the prompt cache"),
                            ("restored", "requests whose prefix the prompt cache gave back"),
                            ("tokens_restored", "prompt tokens restored instead of decoded"),
                            ("evicted", "prompts dropped to stay within --cache-ram")):
        rows.append((f"llmpack_prompt_cache_{name}_total", "counter", help_text, getattr(cache, name) if cache else 0))
    return [(name, kind, help_text, [("", value)]) for name, kind, help_text, value in rows]


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:.6g}"
