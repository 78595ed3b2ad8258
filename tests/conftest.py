"""Shared fixtures: a tiny real GGUF, and real executables built from it with the real CLI."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support.commands import TEST_CACHE, build_bundle
from support.tiny_model import write_tiny_gguf


@pytest.fixture(autouse=True, scope="session")
def isolated_user_state(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("home")
    saved = dict(os.environ)
    os.environ.update(LLMPACK_CACHE=str(TEST_CACHE), HF_HOME=str(home / "hf"),
                      LLMPACK_HISTORY=str(home / "history"), NO_COLOR="1")
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("models") / "tiny.gguf")


@pytest.fixture(scope="session")
def other_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same shape as tiny_gguf, other random weights: a different model to override with -m."""
    return write_tiny_gguf(tmp_path_factory.mktemp("models") / "other.gguf", seed=1, name="other-model")


@pytest.fixture(scope="session")
def tiny_bundle(tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bundle(tiny_gguf, tmp_path_factory.mktemp("bundles") / "tiny.llmpack")
