"""llmpack installed the way a user installs it, from a wheel (not the editable checkout every other test
uses): every module and data file of bundler/, runtime/ and templates/ is in the wheel, and that
install's own `llmpack build` makes an executable whose chat and CLI run.

The new virtualenv gets llmpack from the wheel alone; its dependencies (llama-cpp-python, compiled
once, PyInstaller, ...) come from the test environment through a .pth line, since what is tested here
is that OUR files are complete, not pip's resolver."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from support.commands import REPO, run
from support.tiny_model import write_tiny_gguf

pytestmark = pytest.mark.slow

PACKAGES = ("bundler", "runtime", "templates")


def source_files(*paths: str) -> list[str]:
    """What a clone holds: tracked files and new ones not yet committed, never ignored ones (.venv)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *paths],
                            cwd=REPO, capture_output=True, check=True).stdout.decode().split("\0")
    return sorted(name for name in listed if name and (REPO / name).is_file())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"  # a copy: building in the checkout would write build/ and egg-info there
    for name in source_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    result = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(work / "dist"), str(source)],
                 timeout=600)
    assert result.returncode == 0, result.stderr
    (built,) = (work / "dist").glob("llmpack-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel installed; returns its bin folder."""
    venv = tmp_path_factory.mktemp("install") / "venv"
    assert run([sys.executable, "-m", "venv", "--without-pip", str(venv)]).returncode == 0
    python = venv / "bin" / "python"
    result = run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)],
                 timeout=300)
    assert result.returncode == 0, result.stderr
    site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    # A plain path line: the test environment's own .pth files (its editable llmpack) are not run.
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv / "bin"


def test_the_wheel_holds_every_file_of_the_packages(wheel: Path) -> None:
    inside = set(zipfile.ZipFile(wheel).namelist())
    missing = [name for name in source_files(*PACKAGES) if f"llmpack/{name}" not in inside]
    assert missing == []


def test_the_installed_llmpack_is_the_wheel(installed: Path) -> None:
    result = run([str(installed / "python"), "-c",
                  "import llmpack.bundler.cli, llmpack.runtime.chat.repl, llmpack.templates as t; print(t.__file__)"])
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).is_relative_to(installed.parent)


def test_an_executable_built_by_the_installed_llmpack_chats_and_completes(installed: Path, tmp_path: Path) -> None:
    gguf = write_tiny_gguf(tmp_path / "tiny.gguf")
    # Its own runtime cache: the runtime is frozen from the installed files (about a minute).
    env = {"LLMPACK_CACHE": str(tmp_path / "cache")}
    built = run([str(installed / "llmpack"), "build", str(gguf), "-o", str(tmp_path / "tiny.llmpack"), "-q"],
                env=env, timeout=900)
    assert built.returncode == 0, built.stderr
    executable = str(tmp_path / "tiny.llmpack")

    chat = run([executable, "--chat", "-n", "8", "-t", "1", "--log-disable"], input="hello\n", timeout=120)
    assert chat.returncode == 0, chat.stderr
    assert chat.stdout.strip() and chat.stderr == ""

    cli = run([executable, "--cli", "-p", "hi", "-n", "4", "-t", "1"], timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout.startswith("hi") and len(cli.stdout) > 2
    assert "Traceback" not in cli.stderr
