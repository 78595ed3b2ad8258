"""/metrics for load balancers and autoscalers: llama-server's `llamacpp:` metrics (requests processing
and deferred, KV-cache use, throughput, decode calls) in strict Prometheus text format, from the
scheduler's own counters; /health turns 503 when the decoding thread has died."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
from fastapi.testclient import TestClient
from llmpack.runtime import messages
from llmpack.runtime.engine.scheduler import Scheduler
from llmpack.runtime.engine.types import GenerationRequest, SamplingParams, TokenLogprob
from llmpack.runtime.flags.settings import Settings
from llmpack.runtime.server.state import EngineHolder
from support.apps import app_for
from support.server_fixtures import running_server
from test_server_unit import LOCAL, FakeEngine, error_of

LLAMACPP_METRICS = {
    "llamacpp:prompt_tokens_total": "counter", "llamacpp:prompt_seconds_total": "counter",
    "llamacpp:tokens_predicted_total": "counter", "llamacpp:tokens_predicted_seconds_total": "counter",
    "llamacpp:n_decode_total": "counter", "llamacpp:prompt_tokens_seconds": "gauge",
    "llamacpp:predicted_tokens_seconds": "gauge", "llamacpp:kv_cache_usage_ratio": "gauge",
    "llamacpp:kv_cache_tokens": "gauge", "llamacpp:requests_processing": "gauge",
    "llamacpp:requests_deferred": "gauge", "llamacpp:prompt_tokens_cached_total": "counter",
    "llamacpp:n_tokens_max": "counter", "llamacpp:spec_decode_num_draft_tokens_total": "counter",
    "llamacpp:spec_decode_num_accepted_tokens_total": "counter", "llamacpp:spec_decode_num_drafts_total": "counter",
    "llamacpp:n_busy_slots_per_decode": "gauge",
}
NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
SAMPLE = re.compile(rf'^(?P<name>{NAME})(?P<labels>\{{[a-zA-Z_][a-zA-Z0-9_]*="[^"\\\n]*"(?:,[a-zA-Z_][a-zA-Z0-9_]*="[^"\\\n]*")*\}})? '
                    r"(?P<value>-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|NaN|[+-]Inf)$")


def parse_strictly(text: str) -> dict[str, float]:
    """Prometheus text format 0.0.4, checked line by line: every metric has one HELP then one TYPE
    before its samples, names are valid, each metric's samples are together. Returns the unlabelled
    samples by name."""
    assert text.endswith("\n")
    declared: dict[str, str] = {}
    values: dict[str, float] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert re.fullmatch(NAME, name) and name not in declared, line
            current, declared[name] = name, ""
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name == current and declared[name] == "" and kind in ("counter", "gauge"), line
            declared[name] = kind
        else:
            match = SAMPLE.match(line)
            assert match and match["name"] == current and declared[current], line
            if match["labels"] is None:
                values[current] = float(match["value"])
    for name, kind in LLAMACPP_METRICS.items():
        assert declared.get(name) == kind, name
    return values


class GatedBackend:
    """Each decode waits for `gate`, so requests stay running or deferred while the test looks."""

    n_ctx = 64

    def __init__(self) -> None:
        self.gate = threading.Event()

    def decode(self, tokens, positions, seqs, logits) -> int:
        self.gate.wait(30)
        return 0

    def forget(self, seq: int, from_position: int) -> None:
        pass

    def sampler(self, params: SamplingParams):
        tokens = [1, 2, 3, 0]  # three tokens, then the end of generation

        class Scripted:
            def sample(self, batch_index: int) -> int:
                return tokens.pop(0)

            def free(self) -> None:
                pass

        return Scripted()

    def token_bytes(self, token: int, special: bool = False) -> bytes:
        return b"x"

    def is_end_of_generation(self, token: int) -> bool:
        return token == 0

    def logprob(self, token: int, batch_index: int, top: int) -> TokenLogprob:
        return TokenLogprob(token, 0.0)


def client_for(scheduler: Scheduler) -> TestClient:
    engine = FakeEngine()
    engine.scheduler_stats = scheduler.stats  # as the real Engine answers it
    settings = Settings()
    return TestClient(app_for(settings, EngineHolder.loaded(settings, engine)), base_url=LOCAL)


def test_processing_deferred_and_kv_cache_come_from_the_scheduler() -> None:
    backend = GatedBackend()
    scheduler = Scheduler(backend, n_seq=2, n_batch=16)
    client = client_for(scheduler)
    entered, hold = threading.Event(), threading.Event()

    def occupy() -> None:  # keeps the decoding thread away until all five wait, so it admits two at once
        entered.set()
        hold.wait(30)

    try:
        threading.Thread(target=scheduler.run_exclusive, args=(occupy,), daemon=True).start()
        assert entered.wait(10)
        streams = [scheduler.submit(GenerationRequest((5, 6, 7), 10, SamplingParams())) for _ in range(5)]
        hold.set()
        deadline = time.monotonic() + 10
        while scheduler.stats().running < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        busy = parse_strictly(client.get("/metrics").text)
        assert busy["llamacpp:requests_processing"] == 2 and busy["llamacpp:requests_deferred"] == 3
        backend.gate.set()
        assert ["".join(p.text for p in stream) for stream in streams] == ["xxx"] * 5
        idle = parse_strictly(client.get("/metrics").text)
    finally:
        hold.set()
        backend.gate.set()
        scheduler.close()
    assert idle["llamacpp:requests_processing"] == 0 and idle["llamacpp:requests_deferred"] == 0
    # Both sequences keep their last request's prompt and output for reuse: 3 + 3 tokens each.
    assert idle["llamacpp:kv_cache_tokens"] == 12
    assert idle["llamacpp:kv_cache_usage_ratio"] == pytest.approx(12 / (2 * 64))
    assert idle["llamacpp:n_decode_total"] >= 4


class DecoderKilled(BaseException):
    """Escapes the decoding thread's `except Exception`, as a fatal error in it would."""


def test_health_is_503_once_the_decoding_thread_has_died() -> None:
    backend = GatedBackend()
    scheduler = Scheduler(backend, n_seq=2, n_batch=16)
    client = client_for(scheduler)
    assert client.get("/health").json() == {"status": "ok"}  # not started yet: it starts on demand

    def die(*args) -> int:
        raise DecoderKilled()

    backend.decode = die
    hook, threading.excepthook = threading.excepthook, lambda args: None  # the death is the point
    try:
        scheduler.submit_to(GenerationRequest((5, 6, 7), 10, SamplingParams()), threading.Event(), lambda item: None)
        deadline = time.monotonic() + 10
        while scheduler.stats().decoding and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        threading.excepthook = hook
    response = client.get("/health")
    assert error_of(response, 503)["message"] == messages.DECODING_THREAD_DIED


def test_the_executables_metrics_after_real_requests(tiny_bundle: Path, tmp_path: Path) -> None:
    with running_server(tiny_bundle, "-np", "2", log_path=tmp_path / "server.log") as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="none")
        before = parse_strictly(httpx.get(server.url + "metrics").text)
        assert before["llamacpp:kv_cache_tokens"] == 0 and before["llamacpp:n_decode_total"] == 0
        usages = [client.completions.create(model="m", prompt=f"hello {i}", max_tokens=16, temperature=0).usage
                  for i in range(3)]
        response = httpx.get(server.url + "metrics")
        after = parse_strictly(response.text)
    assert abs(int(response.headers["Process-Start-Time-Unix"]) - time.time()) < 600  # llama-server's header
    assert b"Process-Start-Time-Unix" in [name for name, _ in response.headers.raw]  # and its spelling
    # As llama-server counts them: the prompt tokens decoded, and apart, those found in the KV cache.
    assert after["llamacpp:prompt_tokens_total"] + after["llamacpp:prompt_tokens_cached_total"] == sum(
        u.prompt_tokens for u in usages)
    assert after["llamacpp:spec_decode_num_drafts_total"] == 0 and after["llamacpp:n_tokens_max"] > 0
    assert after["llamacpp:tokens_predicted_total"] == sum(u.completion_tokens for u in usages)
    # One decode for the prompt, one per generated token but the last (sampled, never decoded).
    assert after["llamacpp:n_decode_total"] >= len(usages)
    assert after["llamacpp:prompt_tokens_seconds"] > 0 and after["llamacpp:predicted_tokens_seconds"] > 0
    assert after["llamacpp:kv_cache_tokens"] > 0 and 0 < after["llamacpp:kv_cache_usage_ratio"] <= 1
    assert after["llamacpp:requests_processing"] == 0 and after["llamacpp:requests_deferred"] == 0
