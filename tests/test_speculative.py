"""N-gram speculation (--spec-type ngram-simple): drafts are decoded with the next token and kept only
while they are what the request's own sampler picks, so the output is plain decoding's, greedy or seeded,
alone or batched, with grammars; only the number of decodes changes.

The exactness is proved on a toy language model (the scheduler's bookkeeping: which cells are kept,
which logits are read) and on llama.cpp with the tiny model, whose batch and single-token computations
round alike. On quantized weights the CPU's batched matmuls round differently from its single-token
ones (SmolLM2 Q4_1 here: logits ~0.2 apart), so a near tie may flip there, as in llama-server."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import httpx
import pytest
from llmpack.runtime.engine.engine import Engine
from llmpack.runtime.engine.scheduler import Scheduler
from llmpack.runtime.engine.draft_length import DecodeCost, best_draft_length
from llmpack.runtime.engine.speculative import NgramDrafter
from llmpack.runtime.engine.types import (
    EngineConfig,
    GenerationRequest,
    ModelSource,
    SamplingParams,
    SpeculativeConfig,
    TokenLogprob,
)
from support.server_fixtures import running_server
from support.tiny_model import write_tiny_gguf


def measured_cost(fixed: float, per_token: float) -> DecodeCost:
    """A DecodeCost that has timed steps of 1 to 32 tokens costing fixed + per_token * tokens."""
    cost = DecodeCost()
    for tokens in [1, 8, 1, 32, 1, 4, 1, 16, 1, 2] * 3:
        cost.observe(tokens, fixed + per_token * tokens)
    return cost


def test_the_drafter_proposes_what_followed_the_last_ngram() -> None:
    free = measured_cost(1.0, 0.0)  # a GPU's: verifying more costs next to nothing
    drafter = NgramDrafter(SpeculativeConfig(size_n=2, size_m=3), free)
    history = [5, 1, 2, 3, 4, 9, 1]
    assert drafter.draft(history, 2, 8) == [3, 4, 9]  # (1, 2) was followed by 3 4 9
    assert drafter.draft(history, 2, 2) == [3, 4]  # no more than the room left
    assert drafter.draft(history + [2, 7], 8, 8) == []  # (7, 8) never seen
    assert NgramDrafter(SpeculativeConfig(1, 4), free).draft([4, 4, 4], 4, 8) == [4]  # the latest occurrence: a run goes on


def test_a_shorter_key_finds_the_place_again_after_the_text_departs() -> None:
    copied = list(range(10, 40))
    history = copied + [99, 98] + copied[:3] + [77, *copied[4:8]]  # one token changed four back
    drafter = NgramDrafter(SpeculativeConfig(size_n=8, size_m=6), measured_cost(1.0, 0.0))
    assert drafter.draft(history, copied[8], 8)[:4] == copied[9:13]  # the 8-gram is gone, its last 4 match
    assert NgramDrafter(SpeculativeConfig(size_n=8, size_m=6), measured_cost(1.0, 0.0)).draft(
        history[:-6], 77, 8) == []  # nothing matches before the copy resumes


def test_decode_cost_is_measured_relative_to_a_one_token_step() -> None:
    assert DecodeCost().relative == pytest.approx(0.4)  # nothing timed yet: a CPU's, to be safe
    same_size = DecodeCost()
    for _ in range(30):
        same_size.observe(1, 0.05)
    assert same_size.relative == pytest.approx(0.4)  # one size only: no slope to measure
    assert measured_cost(0.010, 0.004).relative == pytest.approx(0.004 / 0.014)
    assert measured_cost(0.010, 0.0).relative == pytest.approx(0.01)  # never free: drafts stay finite


def test_the_draft_length_follows_the_record_and_the_cost() -> None:
    assert best_draft_length(0.9, 0.42, 48) == 4  # 1 + .9 + ... + .9^4 tokens for 2.68 steps' cost
    assert best_draft_length(0.99, 0.01, 48) == 48  # a GPU and a faithful copy: all of it
    assert best_draft_length(0.2, 0.42, 48) == 1  # at least one, so that the record can recover
    assert best_draft_length(0.9, 0.42, 3) == 3
    drafter = NgramDrafter(SpeculativeConfig(size_n=2, size_m=48), measured_cost(0.010, 0.004))
    history = list(range(100)) * 2
    lengths = []
    for kept in [0, 0, 0, 48, 48, 48, 48, 48, 48, 48]:
        lengths.append(len(drafter.draft(history[:-1], history[-1], 48)))
        drafter.settle(min(kept, lengths[-1]))
    assert lengths[2] < lengths[0] and lengths[-1] > lengths[3] * 2  # misses shorten it, hits lengthen it


class ToyModel:
    """A language model in miniature: the next token is a function of the sequence's cells as stored
    (mostly a copy of the token 8 back, sometimes something new), so a cell left behind by a rejected
    draft, or logits read at the wrong place, change the output. Token 0 ends a generation."""

    n_ctx = 512

    def __init__(self) -> None:
        self.cells: dict[int, dict[int, int]] = {}
        self.outputs: list[tuple[int, ...]] = []  # the context behind each row of the last batch
        self.decodes = 0

    def decode(self, tokens, positions, seqs, logits) -> int:
        self.decodes += 1
        self.outputs = []
        for token, position, seq, wanted in zip(tokens, positions, seqs, logits):
            cells = self.cells.setdefault(seq, {})
            assert position not in cells and position == len(cells), "a stale or missing cell"
            cells[position] = token
            self.outputs.append(tuple(cells[p] for p in range(position + 1)) if wanted else ())
        return 0

    def forget(self, seq: int, from_position: int) -> None:
        cells = self.cells.setdefault(seq, {})
        for position in [p for p in cells if p >= from_position]:
            del cells[position]

    def sampler(self, params: SamplingParams) -> "ToySampler":
        return ToySampler(self, params)

    def token_bytes(self, token: int, special: bool = False) -> bytes:
        return f"<{token}>".encode()

    def is_end_of_generation(self, token: int) -> bool:
        return token == 0

    def logprob(self, token: int, batch_index: int, top: int) -> TokenLogprob:
        return TokenLogprob(token, 0.0)


class ToySampler:
    def __init__(self, model: ToyModel, params: SamplingParams) -> None:
        self.model, self.random = model, random.Random(params.seed) if params.temperature > 0 else None

    def sample(self, batch_index: int) -> int:
        context = self.model.outputs[batch_index]
        assert context, "logits read where none were asked for"
        likely = context[-8] if len(context) >= 8 and sum(context[-2:]) % 5 else sum(context[-3:]) * 31 % 97 + 1
        if self.random is not None and self.random.random() < 0.2:  # sampled: sometimes another token
            return self.random.randrange(1, 98)
        return likely

    def free(self) -> None:
        pass


def toy_outputs(speculative: SpeculativeConfig | None, sampling: SamplingParams) -> tuple[list[list[int]], Scheduler, ToyModel]:
    model = ToyModel()
    scheduler = Scheduler(model, n_seq=3, n_batch=64, speculative=speculative)
    prompts = [tuple((i * 13 + k * 7) % 97 + 1 for k in range(20)) for i in range(5)]
    # All submitted before the decoding thread takes any (it waits for the lock held here), so the
    # requests are batched alike in every run, however slowly threads start on a busy machine.
    with scheduler._wake:
        streams = [scheduler.submit(GenerationRequest(prompt, 120, sampling)) for prompt in prompts]
    outputs = [[t for piece in stream for t in piece.token_ids] for stream in streams]
    scheduler.close()
    return outputs, scheduler, model


@pytest.mark.parametrize("sampling", [SamplingParams(temperature=0.0), SamplingParams(temperature=1.0, seed=7)],
                         ids=["greedy", "seeded"])
def test_speculation_changes_the_decodes_not_the_output(sampling: SamplingParams) -> None:
    plain, _, plain_model = toy_outputs(None, sampling)
    fast, scheduler, fast_model = toy_outputs(SpeculativeConfig(size_n=3, size_m=8), sampling)
    assert fast == plain and all(len(o) == 120 for o in plain)
    counts = scheduler.stats().spec
    assert counts.accepted > 50 and counts.drafted > counts.accepted, counts  # drafts taken and refused
    assert scheduler._decode_cost._weight > 8  # its generation steps were timed: the draft length follows them
    assert fast_model.decodes < plain_model.decodes * (0.7 if sampling.temperature == 0 else 0.9), \
        (fast_model.decodes, plain_model.decodes)


# -- llama.cpp, the tiny model ---------------------------------------------------------------------

PROMPTS = ["the cat the cat the cat", "hello world hello", "a b c d a b c", "yes no yes no"]


def engine_outputs(model: Path, speculative: SpeculativeConfig | None, sampling: SamplingParams):
    engine = Engine(ModelSource(str(model)), EngineConfig(n_ctx=4096, n_threads=2, n_seq_max=4, speculative=speculative))
    try:
        def run(text: str) -> list[int]:
            request = GenerationRequest(tuple(engine.tokenize(text, True, True)), 96, sampling)
            return [t for piece in engine.generate(request) for t in piece.token_ids]

        alone = [run(text) for text in PROMPTS]
        together: list[list[int]] = [[] for _ in PROMPTS]
        threads = [threading.Thread(target=lambda i=i: together.__setitem__(i, run(PROMPTS[i]))) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return alone, together, engine.scheduler_stats().spec
    finally:
        engine.close()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("models") / "spec.gguf", n_ctx=4096)


@pytest.mark.parametrize("sampling", [
    SamplingParams(temperature=0.0, ignore_eos=True),
    SamplingParams(temperature=0.0, ignore_eos=True, grammar='root ::= ("the" | " cat" | " hello" | " a" | " b")+'),
    SamplingParams(temperature=0.9, seed=3, ignore_eos=True)], ids=["greedy", "grammar", "seeded"])
def test_llama_cpp_output_is_the_same_with_speculation_alone_and_batched(model: Path, sampling: SamplingParams) -> None:
    plain_alone, plain_together, _ = engine_outputs(model, None, sampling)
    alone, together, counts = engine_outputs(model, SpeculativeConfig(size_n=1, size_m=8), sampling)
    assert alone == plain_alone and together == plain_together
    assert counts.drafted > 0, counts


@pytest.mark.slow
def test_the_server_speculates_and_counts_it(tiny_bundle: Path, model: Path, tmp_path: Path) -> None:
    with running_server(tiny_bundle, "-m", str(model), "-c", "2048", "--spec-type", "ngram-simple",
                        "--spec-ngram-simple-size-n", "1", "--spec-ngram-simple-size-m", "8",
                        log_path=tmp_path / "server.log") as server:
        body = {"prompt": "the cat the cat the cat", "n_predict": 64, "temperature": 0, "ignore_eos": True}
        answer = httpx.post(server.url + "completion", json=body, timeout=60).json()
        assert answer["tokens_predicted"] == 64, answer
        # llama.cpp's ignore_eos on the OpenAI routes too (it stopped these at the end-of-generation token)
        body = {"prompt": "the cat the cat the cat", "max_tokens": 64, "temperature": 0, "ignore_eos": True}
        answer = httpx.post(server.base_url + "/completions", json=body, timeout=60).json()
        assert answer["usage"]["completion_tokens"] == 64, answer
        slots = httpx.get(server.url + "slots", timeout=30).json()
        assert all(slot["speculative"] for slot in slots)
        metrics = server.metrics()
        assert metrics["llamacpp:spec_decode_num_draft_tokens_total"] > 0, metrics
        assert metrics["llamacpp:spec_decode_num_drafts_total"] > 0
