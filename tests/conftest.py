"""Shared fixtures: a tiny real GGUF, and real executables built from it with the real CLI."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from support.commands import REPO, TEST_CACHE, build_bundle
from support.tiny_model import write_tiny_gguf
from support.tiny_multimodal import write_tiny_multimodal


@pytest.fixture(autouse=True, scope="session")
def isolated_user_state(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("home")
    saved = dict(os.environ)
    os.environ.update(LLMPACK_CACHE=str(TEST_CACHE), HF_HOME=str(home / "hf"),
                      LLMPACK_HISTORY=str(home / "history"), NO_COLOR="1")
    yield
    os.environ.clear()
    os.environ.update(saved)


def _tree_status() -> str:
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO,
                          capture_output=True, text=True, check=True).stdout


@pytest.fixture(autouse=True, scope="session")
def checkout_left_as_found():
    """Tests write only to temporary folders: the checkout's `git status` is the same after the suite as
    before it (a failure here is an error at the teardown of the last test)."""
    before = _tree_status()
    yield
    after = _tree_status()
    assert after == before, f"the tests changed the checkout:\n--- before\n{before}--- after\n{after}"


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("models") / "tiny.gguf")


@pytest.fixture(scope="session")
def other_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same shape as tiny_gguf, other random weights: a different model to override with -m."""
    return write_tiny_gguf(tmp_path_factory.mktemp("models") / "other.gguf", seed=1, name="other-model")


@pytest.fixture(scope="session")
def vision_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny multimodal pair: the tiny LM and an image projector libmtmd loads (support/tiny_multimodal.py)."""
    return write_tiny_multimodal(tmp_path_factory.mktemp("vision"))


@pytest.fixture(scope="session")
def vision_bundle(vision_pair: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pair built into one executable (the projector carried)."""
    model, projector = vision_pair
    return build_bundle(model, tmp_path_factory.mktemp("vision-bundle") / "tiny-vision.llmpack", "--mmproj", str(projector))


@pytest.fixture(scope="session")
def tiny_bundle(tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bundle(tiny_gguf, tmp_path_factory.mktemp("bundles") / "tiny.llmpack")
