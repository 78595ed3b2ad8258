"""A draft model (-md, llama-server's draft-simple): a second model of the same vocabulary drafts, the model
verifies through n-gram speculation's path, so greedy and seeded output is plain decoding's, alone and
batched, with grammars, on sequences reused by other conversations; llama-server's --spec-draft-* limits
hold; a draft of another vocabulary is refused in one line; the server speculates end to end with it."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
import support.tiny_model
from llmpack.runtime.engine.engine import Engine
from llmpack.runtime.engine.types import (
    DraftConfig,
    EngineConfig,
    GenerationRequest,
    ModelSource,
    SamplingParams,
    SpeculativeConfig,
)
from llmpack.runtime.errors import EngineFailure
from support.server_fixtures import running_server
from support.tiny_model import write_tiny_gguf, write_tiny_reranker

PROMPTS = ["the cat the cat the cat", "hello world hello", "a b c d a b c", "yes no yes no"]


_RNG = np.random.default_rng


class _Perturbed:
    """The tiny model's random weights, each nudged: a draft that mostly agrees with the model."""

    def __init__(self, seed: int) -> None:
        self._same, self._noise = _RNG(0), _RNG(seed)

    def standard_normal(self, shape):
        return self._same.standard_normal(shape) + 0.05 * self._noise.standard_normal(shape)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("draft-models")
    with pytest.MonkeyPatch.context() as patch:  # the weights' generator, for the draft's only
        patch.setattr(support.tiny_model.np.random, "default_rng", _Perturbed)
        other = write_tiny_gguf(folder / "other.gguf", n_ctx=4096, seed=5)
    return {"main": write_tiny_gguf(folder / "main.gguf", n_ctx=4096), "other": other,
            "reranker": write_tiny_reranker(folder / "reranker.gguf")}


def outputs(main: Path, draft: DraftConfig | None, sampling: SamplingParams, n_seq: int = 2, together: bool = True,
            ngram: SpeculativeConfig | None = None):
    """Each prompt alone, then all at once (more than n_seq: sequences pass between conversations)."""
    config = EngineConfig(n_ctx=4096, n_threads=1, n_seq_max=n_seq, draft=draft, speculative=ngram)
    engine = Engine(ModelSource(str(main)), config)
    try:
        def run(text: str) -> list[int]:
            request = GenerationRequest(tuple(engine.tokenize(text, True, True)), 48, sampling)
            return [t for piece in engine.generate(request) for t in piece.token_ids]

        alone = [run(text) for text in PROMPTS]
        batched: list[list[int]] = [[] for _ in PROMPTS]
        threads = [threading.Thread(target=lambda i=i: batched.__setitem__(i, run(PROMPTS[i])))
                   for i in range(len(PROMPTS) if together else 0)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return alone, batched, engine.scheduler_stats()
    finally:
        engine.close()


@pytest.mark.parametrize("sampling", [
    SamplingParams(temperature=0.0, ignore_eos=True),
    SamplingParams(temperature=0.0, ignore_eos=True, grammar='root ::= ("the" | " cat" | " hello" | " a" | " b")+'),
    SamplingParams(temperature=0.9, seed=3, ignore_eos=True)], ids=["greedy", "grammar", "seeded"])
def test_a_draft_model_changes_the_decodes_not_the_output(models: dict[str, Path], sampling: SamplingParams) -> None:
    plain_alone, plain_together, plain_stats = outputs(models["main"], None, sampling)
    assert plain_stats.spec is None
    drafts = [models["other"]] + ([models["main"]] if sampling.temperature == 0 and not sampling.grammar else [])
    for draft in drafts:
        alone, together, stats = outputs(models["main"], DraftConfig(str(draft), n_max=4), sampling)
        assert alone == plain_alone and together == plain_together, draft.name
        counts = stats.spec
        assert counts.accepted > 0 and counts.drafted <= counts.drafts * 4, (draft.name, counts)
        if draft == models["main"]:
            # drafting for itself, greedy: every draft is what the model picks (the tiny model's batched
            # and single-token computations round alike), so fewer decodes than tokens
            assert counts.accepted == counts.drafted, counts
            assert stats.n_decode < plain_stats.n_decode * 0.6, (stats.n_decode, plain_stats.n_decode)
        else:
            assert counts.accepted < counts.drafted, counts  # another model: some drafts refused


def test_the_draft_limits_are_llama_servers(models: dict[str, Path]) -> None:
    greedy, main = SamplingParams(temperature=0.0, ignore_eos=True), models["main"]
    plain, _, _ = outputs(main, None, greedy, together=False)
    # --spec-draft-p-min 1: no token is that certain among its ten best, so nothing is drafted
    alone, _, stats = outputs(main, DraftConfig(str(models["other"]), n_max=4, p_min=1.0), greedy, together=False)
    assert alone == plain and stats.spec.drafted == 0, stats.spec
    # --spec-draft-n-min above --spec-draft-n-max: every draft is too short to be used
    alone, _, stats = outputs(main, DraftConfig(str(main), n_max=2, n_min=3), greedy, together=False)
    assert alone == plain and stats.spec.drafted == 0, stats.spec
    # --spec-draft-n-max 1: one token per draft
    alone, _, stats = outputs(main, DraftConfig(str(main), n_max=1), greedy, together=False)
    assert alone == plain and stats.spec.drafted == stats.spec.drafts > 0, stats.spec


def test_n_gram_lookups_and_a_draft_model_together(models: dict[str, Path]) -> None:
    greedy = SamplingParams(temperature=0.0, ignore_eos=True)
    plain_alone, plain_together, _ = outputs(models["main"], None, greedy)
    alone, together, stats = outputs(models["main"], DraftConfig(str(models["other"]), n_max=4), greedy,
                                     ngram=SpeculativeConfig(size_n=1, size_m=8))
    assert alone == plain_alone and together == plain_together
    assert stats.spec.accepted > 0, stats.spec


def test_a_draft_of_another_vocabulary_is_refused(models: dict[str, Path]) -> None:
    with pytest.raises(EngineFailure, match="does not share the model's vocabulary"):
        Engine(ModelSource(str(models["main"])), EngineConfig(n_ctx=512, draft=DraftConfig(str(models["reranker"]))))


@pytest.mark.slow
def test_the_server_drafts_with_md(tiny_bundle: Path, models: dict[str, Path], tmp_path: Path) -> None:
    with running_server(tiny_bundle, "-m", str(models["main"]), "-c", "2048", "-md", str(models["other"]),
                        "--draft-max", "4", "--spec-draft-n-min", "0", "--draft-p-min", "0", "-ngld", "0",
                        log_path=tmp_path / "server.log") as server:
        body = {"prompt": "the cat the cat the cat", "n_predict": 48, "temperature": 0, "ignore_eos": True}
        answer = httpx.post(server.url + "completion", json=body, timeout=60).json()
        assert answer["tokens_predicted"] == 48, answer
        body = {"model": "m", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 32,
                "temperature": 0, "ignore_eos": True}
        answer = httpx.post(server.base_url + "/chat/completions", json=body, timeout=60).json()
        assert answer["usage"]["completion_tokens"] == 32, answer
        assert all(slot["speculative"] for slot in httpx.get(server.url + "slots", timeout=30).json())
        metrics = server.metrics()
        assert metrics["llamacpp:spec_decode_num_draft_tokens_total"] > 0, metrics
        assert 0 < metrics["llamacpp:spec_decode_num_accepted_tokens_total"] <= metrics["llamacpp:spec_decode_num_draft_tokens_total"]
    # draft-simple needs a draft model; one of another vocabulary ends the start with one line
    done = subprocess.run([str(tiny_bundle), "-m", str(models["main"]), "--cli", "-p", "hi", "-n", "1",
                           "--spec-type", "draft-simple"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "needs a draft model" in done.stderr, done.stderr
    done = subprocess.run([str(tiny_bundle), "-m", str(models["main"]), "--cli", "-p", "hi", "-n", "1",
                           "-md", str(models["reranker"])], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "does not share the model's vocabulary" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
