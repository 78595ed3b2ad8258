"""The Linux x86_64 executable runs on an older CPU (Nehalem: SSE4.2, no AVX), emulated by qemu-user
(tests/support/cpu_paths.py says how), and computes there exactly what the same SSE4.2 variant computes
natively: greedy text is equal on the same compute path, whatever the host."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import pytest
from support.commands import llmpack, run
from support.cpu_paths import NEHALEM, unpack

# qemu-user is installed by the set-up (build/system-deps.sh): a missing one is a failure, never a
# skip. Only the platform decides: the CPU models emulated here are x86-64 ones.
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(platform.machine() != "x86_64", reason="emulates older x86-64 CPUs")]
ARGS = ["--cli", "-p", "the cat", "-n", "8", "--temp", "0"]


def test_runs_on_nehalem_with_the_sse42_build(tiny_bundle: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    # The launcher under qemu: it unpacks the runtime into a fresh cache, then its exec runs it natively.
    unpacked = run([*NEHALEM, str(tiny_bundle), "--version"], env={"LLMPACK_CACHE": str(cache)}, timeout=300)
    assert unpacked.returncode == 0, unpacked.stderr[-2000:]
    runtime = unpack(tiny_bundle, cache)
    emulated = run([*NEHALEM, str(runtime.program), *ARGS, "--verbose"], env=runtime.emulated_env(), timeout=300)
    assert emulated.returncode == 0, emulated.stderr[-2000:]
    assert "libggml-cpu-sse42.so" in emulated.stderr  # ggml picked the variant this CPU can run
    native = run([str(tiny_bundle), *ARGS, "--verbose"], env=runtime.sse42_env(tmp_path / "sse42"))
    assert native.returncode == 0 and "libggml-cpu-sse42.so" in native.stderr, native.stderr[-2000:]
    assert len(emulated.stdout) > len("the cat") and emulated.stdout == native.stdout


def test_manifest_states_the_minimum_glibc(tiny_bundle: Path) -> None:
    described = llmpack("inspect", str(tiny_bundle))
    glibc = next(line for line in described.stdout.splitlines() if line.startswith("runtime "))
    assert "needs glibc >= 2." in glibc
    version = glibc.split("needs glibc >= ")[1].rstrip(")")
    assert tuple(map(int, version.split("."))) <= tuple(map(int, os.confstr("CS_GNU_LIBC_VERSION").split()[1].split(".")))
