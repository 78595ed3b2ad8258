"""The CI workflows (.github/workflows/) are valid: actionlint (its expressions, contexts, action inputs,
runner labels) with shellcheck on every `run:` script, both from the set-up; and the runtime workflow
builds, on its own runner, every target llmpack knows, with that target's recipe."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from llmpack.bundler.targets import KNOWN_TARGETS

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
RUNTIMES = ROOT / ".github" / "workflows" / "runtimes.yml"


def actionlint(*files: Path) -> subprocess.CompletedProcess:
    tool = shutil.which("actionlint", path=str(Path(sys.executable).parent))
    checker = shutil.which("shellcheck")
    assert tool and checker, "actionlint (dev dependencies) and shellcheck (build/system-deps.sh) are set up"
    return subprocess.run([tool, "-no-color", f"-shellcheck={checker}", *map(str, files)], capture_output=True,
                          text=True, timeout=120)


def test_every_workflow_passes_actionlint_and_shellcheck() -> None:
    assert RUNTIMES in WORKFLOWS
    result = actionlint(*WORKFLOWS)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("mistake, complaint", [
    (("${{ matrix.os }}", "${{ matrix.oss }}"), 'property "oss" is not defined'),
    (("bash build/setup.sh", "cd $HOME/x && bash build/setup.sh"), "shellcheck reported issue"),
    (("uses: actions/checkout@v4", "uses: actions/checkout@v4\n        with: {fetch-depht: 1}"), 'input "fetch-depht" is not defined'),
])
def test_actionlint_finds_mistakes_in_this_workflow(mistake: tuple[str, str], complaint: str, tmp_path: Path) -> None:
    """The check above can fail: the same file with one mistake is refused, for the reason planted."""
    text = RUNTIMES.read_text()
    assert mistake[0] in text
    broken = tmp_path / ".github" / "workflows" / "runtimes.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(text.replace(mistake[0], mistake[1], 1))
    result = actionlint(broken)
    assert result.returncode != 0 and complaint in result.stdout, result.stdout


def test_every_target_is_built_and_smoke_tested_on_its_own_runner() -> None:
    workflow = yaml.safe_load(RUNTIMES.read_text())
    job = workflow["jobs"]["runtime"]
    entries = job["strategy"]["matrix"]["include"]
    assert {e["target"] for e in entries} == set(KNOWN_TARGETS)
    runners = {"linux-x86_64": "ubuntu", "linux-aarch64": "ubuntu-22.04-arm", "darwin-arm64": "macos", "windows-x86_64": "windows"}
    for entry in entries:
        assert entry["os"].startswith(runners[entry["target"]]), entry
        assert (ROOT / "build" / "recipes" / f"{entry['target']}-{entry['variant']}.env").is_file(), entry
    steps = {step.get("name", step.get("uses")): step for step in job["steps"]}
    smoke = steps["Smoke test on this runner"]
    assert "llmpack\" build tiny.gguf" in smoke["run"] and "--runtime-dir" in smoke["run"] and "--cli" in smoke["run"]
    # Windows: one-folder behind our launcher (never PyInstaller's one-file), MinGW-w64's gcc for it,
    # and llama.cpp's chat library shim built there and put beside llama.dll before the freeze (issue 22).
    assert "onefile" not in RUNTIMES.read_text().lower()
    assert "gcc.exe" in steps["Freeze the runtime"]["env"]["CC"]
    names = list(steps)
    shim_step = next(name for name in names if name.startswith("llama.cpp's chat library shim (Windows"))
    shim = steps[shim_step]
    assert shim["if"] == "runner.os == 'Windows'" and "build/chat-shim.sh" in shim["run"]
    assert "llmpack-chat.dll" in shim["run"] and "llama_chat._library()" in shim["run"]
    assert names.index(shim_step) < names.index("Freeze the runtime")
    # macOS: signing and notarization only with the secrets, documented at the top of the file.
    assert "LLMPACK_CODESIGN_IDENTITY" in steps["Import the signing certificate (macOS, with the Apple secrets)"]["run"]
    assert "notarytool submit" in steps["Notarize the runtime (macOS, with the Apple secrets)"]["run"]
