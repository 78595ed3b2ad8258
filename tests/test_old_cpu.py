"""The Linux x86_64 executable runs on an older CPU (Nehalem: SSE4.2, no AVX), emulated by qemu-user.

qemu-user does not follow an exec (the new program would run natively), and there are two: the launcher
execs the runtime it unpacked, and PyInstaller's one-folder bootloader re-execs itself once with its
library path set. So the launcher runs under qemu on its own (it unpacks into a fresh cache), and then
the runtime runs under qemu in the environment those two execs give it: everything that runs, the
launcher, Python, our runtime and llama.cpp, runs on the emulated CPU."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import pytest
from support.commands import llmpack, run

# qemu-user is installed by the set-up (build/system-deps.sh): a missing one is a failure, never a
# skip. Only the platform decides: the CPU models emulated here are x86-64 ones.
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(platform.machine() != "x86_64", reason="emulates older x86-64 CPUs")]
ARGS = ["--cli", "-p", "the cat", "-n", "8", "--temp", "0"]
NEHALEM = ["qemu-x86_64", "-cpu", "Nehalem"]


def test_runs_on_nehalem_with_the_sse42_build(tiny_bundle: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    # The launcher under qemu: it unpacks the runtime, then its exec runs the runtime natively.
    unpacked = run([*NEHALEM, str(tiny_bundle), "--version"], env={"LLMPACK_CACHE": str(cache)}, timeout=300)
    assert unpacked.returncode == 0, unpacked.stderr[-2000:]
    runtime = json.loads(llmpack("inspect", str(tiny_bundle), "--json").stdout)["runtime"]
    entry = cache / "runtime" / runtime["sha256"][:16]
    program = entry / "llmpack-runtime"
    env = {"LLMPACK_CACHE": str(cache), "LLMPACK_BUNDLE": str(tiny_bundle), "LLMPACK_RUNTIME_DIR": str(entry),
           # What PyInstaller's bootloader sets before it re-execs itself (it skips the re-exec when set).
           "_PYI_ARCHIVE_FILE": str(program), "_PYI_PARENT_PROCESS_LEVEL": "-1",
           "LD_LIBRARY_PATH": str(entry / "_internal")}
    emulated = run([*NEHALEM, str(program), *ARGS, "--verbose"], env=env, timeout=300)
    assert emulated.returncode == 0, emulated.stderr[-2000:]
    assert "libggml-cpu-sse42.so" in emulated.stderr  # ggml picked the variant this CPU can run
    native = run([str(tiny_bundle), *ARGS, "--log-disable"])
    assert emulated.stdout == native.stdout


def test_manifest_states_the_minimum_glibc(tiny_bundle: Path) -> None:
    described = llmpack("inspect", str(tiny_bundle))
    glibc = next(line for line in described.stdout.splitlines() if line.startswith("runtime "))
    assert "needs glibc >= 2." in glibc
    version = glibc.split("needs glibc >= ")[1].rstrip(")")
    assert tuple(map(int, version.split("."))) <= tuple(map(int, os.confstr("CS_GNU_LIBC_VERSION").split()[1].split(".")))
