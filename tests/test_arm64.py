"""Linux ARM64 (aarch64), built and run on this x86-64 machine: build/arm64-runtime.sh cross-compiles
llama.cpp (with the ARM CPU variants) and its chat library, freezes the runtime with PyInstaller on an
ARM64 Python (a debootstrap root run through qemu-user-static), and `llmpack build --target linux-aarch64
--runtime-dir` makes the executable here. It runs under qemu-aarch64 (binfmt_misc; QEMU_LD_PREFIX names
the root's C library): --version names the variant ggml picked for each emulated CPU, --cli and --server
answer with SmolLM2, and the greedy text is set beside the x86-64 executable's.

Everything the script builds is cached under ~/.cache/llmpack (arm64/, wheels/, chat-shim/), as
build/setup.sh's wheel is: missing pieces are built here, so a first run takes long (the cross-compile
~22 min and the chat library ~11 min on 2 busy cores, the root ~25 min), a later one re-freezes the
runtime when its sources changed (emulated, ~4 min) or nothing. The answers run on qemu's Neoverse N1
(the armv8.2_2 variant, NEON): qemu's default CPU, "max", gets the SVE2 variant, whose emulation is
6 to 13 times slower (README, Platforms)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from openai import OpenAI
from support.commands import REPO, build_bundle, llmpack, run
from support.server_fixtures import start_server
from test_smollm2 import smollm2_gguf

pytestmark = [pytest.mark.slow, pytest.mark.smollm2]

# ggml's CPU variants for Linux ARM64 that build/cross-aarch64.sh builds (the two SME ones need GCC 14).
ARM_VARIANTS = {"armv8.0_1", "armv8.2_1", "armv8.2_2", "armv8.2_3", "armv8.6_1", "armv8.6_2"}
# qemu's CPU models and the variant each must get: no extension (Cortex-A53), DOTPROD and FP16
# (Neoverse N1), and qemu's "max" (the default): SVE2 and I8MM, the most this build carries.
EXPECTED_VARIANT = {"cortex-a53": "armv8.0_1", "neoverse-n1": "armv8.2_2", "max": "armv8.6_2"}
# The CPU the answers run on: a NEON variant, emulated quickly (SVE's emulation is slow).
ANSWERING_CPU = "neoverse-n1"
PROMPT = ("-p", "The capital of France is", "-n", "12", "--temp", "0", "--log-disable", "-c", "512")
AARCH64 = 183  # ELF e_machine


@dataclass(frozen=True)
class Arm64:
    root: Path
    runtime: Path


@pytest.fixture(scope="session")
def arm64() -> Arm64:
    """The cached ARM64 runtime (built first if needed), in the user's llmpack cache, not the tests'."""
    env = {k: v for k, v in os.environ.items() if k != "LLMPACK_CACHE"}
    started = time.monotonic()
    result = subprocess.run(["nice", "-n", "19", "bash", str(REPO / "build" / "arm64-runtime.sh")], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=4 * 3600, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-3000:]
    fields = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    print(f"arm64 runtime ready in {time.monotonic() - started:.0f} s")
    return Arm64(Path(fields["root"]), Path(fields["runtime"]))


@pytest.fixture(scope="session")
def arm64_bundle(arm64: Arm64, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("arm64") / "smollm2-aarch64.llmpack"
    result = llmpack("build", str(smollm2_gguf()), "-o", str(output), "--target", "linux-aarch64",
                     "--runtime-dir", str(arm64.runtime), "-q")
    assert result.returncode == 0, result.stderr
    return output


@pytest.fixture(scope="session")
def arm64_env(arm64: Arm64, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """How an ARM64 program runs here: the kernel hands it to qemu-aarch64 (binfmt_misc), whose
    QEMU_LD_PREFIX finds the ARM64 dynamic loader and C library in the root; QEMU_CPU the CPU it
    emulates; a runtime cache of its own."""
    return {"QEMU_LD_PREFIX": str(arm64.root), "QEMU_CPU": ANSWERING_CPU,
            "LLMPACK_CACHE": str(tmp_path_factory.mktemp("arm64-cache"))}


def test_the_runtime_is_an_aarch64_build(arm64: Arm64, arm64_bundle: Path) -> None:
    info = json.loads((arm64.runtime / "runtime.json").read_text())
    assert info["target"] == "linux-aarch64" and info["gpu"] == [] and info["min_glibc"], info
    assert elf_machine(arm64_bundle.read_bytes()[:20]) == AARCH64  # the launcher at its head
    inspected = json.loads(llmpack("inspect", str(arm64_bundle), "--json").stdout)
    assert inspected["manifest"]["model"]["architecture"] == "llama"


def test_version_names_the_arm_variant_ggml_picked_for_each_cpu(arm64_bundle: Path, arm64_env: dict[str, str]) -> None:
    for cpu, variant in EXPECTED_VARIANT.items():
        result = run([str(arm64_bundle), "--version"], env={**arm64_env, "QEMU_CPU": cpu}, timeout=600)
        assert result.returncode == 0, result.stderr
        backends = next(line for line in result.stdout.splitlines() if line.startswith("backends: "))
        assert backends.startswith(f"backends: CPU ({variant})"), (cpu, backends)
    unpacked = next(Path(arm64_env["LLMPACK_CACHE"], "runtime").iterdir())
    carried = {p.name[len("libggml-cpu-"):-len(".so")] for p in unpacked.rglob("libggml-cpu-*.so")}
    assert carried == ARM_VARIANTS
    # llama.cpp's chat library, cross-compiled too, travels beside libllama as on x86-64.
    chat_library = next(unpacked.rglob("libllmpack-chat.so"))
    assert elf_machine(chat_library.read_bytes()[:20]) == AARCH64


def elf_machine(head: bytes) -> int:
    assert head[:4] == b"\x7fELF", head
    return int.from_bytes(head[18:20], "little")


@pytest.fixture(scope="session")
def x86_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bundle(smollm2_gguf(), tmp_path_factory.mktemp("x86") / "smollm2.llmpack", "-q")


def test_cli_answers_and_its_greedy_text_beside_the_x86_64_executable(arm64_bundle: Path, arm64_env: dict[str, str],
                                                                      x86_bundle: Path) -> None:
    """Both executables complete with Paris. Their greedy words may differ (README, Platforms: other
    kernels add the same products in another order); the test prints both, and whether they are equal."""
    started = time.monotonic()
    arm = run([str(arm64_bundle), "--cli", *PROMPT], env=arm64_env, timeout=900)
    seconds = time.monotonic() - started
    assert arm.returncode == 0, arm.stderr
    x86 = run([str(x86_bundle), "--cli", *PROMPT], timeout=300)
    assert x86.returncode == 0, x86.stderr
    print(f"aarch64 ({ANSWERING_CPU}) under qemu ({seconds:.0f} s): {arm.stdout!r}\nx86-64: {x86.stdout!r}\nequal: {arm.stdout == x86.stdout}")
    assert arm.stdout.startswith("The capital of France is") and "Paris" in arm.stdout, arm.stdout
    assert "Paris" in x86.stdout, x86.stdout


def test_server_answers_a_chat_request(arm64_bundle: Path, arm64_env: dict[str, str], tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in arm64_env.items():
        monkeypatch.setenv(name, value)
    server = start_server(arm64_bundle, "-c", "1024", log_path=tmp_path / "server.log", timeout=900)
    try:
        client = OpenAI(base_url=server.base_url, api_key="none", timeout=900)
        model = client.models.list().data[0].id
        reply = client.chat.completions.create(model=model, temperature=0, max_tokens=24,
                                               messages=[{"role": "user", "content": "Tell me the capital of France."}])
        assert "Paris" in reply.choices[0].message.content, reply
    finally:
        assert server.interrupt(timeout=120) == 0, server.log
