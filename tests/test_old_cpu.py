"""The Linux x86_64 executable runs on an older CPU (Nehalem: SSE4.2, no AVX), emulated by qemu-user.

PyInstaller's bootloader re-executes itself after unpacking, and qemu-user does not follow an exec (the
child would run natively). So the test unpacks the archive as the bootloader would and starts the
executable under qemu as that child, in the environment the bootloader gives it: everything that runs,
Python, our runtime and llama.cpp, then runs on the emulated CPU."""

from __future__ import annotations

import os
import platform
import secrets
import shutil
import tempfile
from pathlib import Path

import pytest
from support.commands import run

# qemu-user is installed by the set-up (build/system-deps.sh): a missing one is a failure, never a
# skip. Only the platform decides: the CPU models emulated here are x86-64 ones.
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(platform.machine() != "x86_64", reason="emulates older x86-64 CPUs")]
ARGS = ["--cli", "-p", "the cat", "-n", "8", "--temp", "0"]


def unpack_like_the_bootloader(executable: Path) -> Path:
    from PyInstaller.archive.readers import CArchiveReader

    # The bootloader checks the folder's name: _MEI and 14 letters or digits, in the temporary folder.
    home = Path(tempfile.gettempdir()) / ("_MEI" + secrets.token_hex(7))
    home.mkdir(mode=0o700)
    archive = CArchiveReader(str(executable))
    for name, entry in archive.toc.items():
        kind = entry[-1]
        target = home / name
        if kind in ("b", "x"):  # binaries and data files
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.extract(name))
            target.chmod(0o755 if kind == "b" else 0o644)
        elif kind == "n":  # symbolic links between them
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(archive.extract(name).rstrip(b"\0").decode())
    return home


def test_runs_on_nehalem_with_the_sse42_build(tiny_bundle: Path) -> None:
    home = unpack_like_the_bootloader(tiny_bundle)
    try:
        env = {"_PYI_ARCHIVE_FILE": str(tiny_bundle), "_PYI_PARENT_PROCESS_LEVEL": "0",
               "_PYI_APPLICATION_HOME_DIR": str(home), "LD_LIBRARY_PATH": str(home)}
        emulated = run(["qemu-x86_64", "-cpu", "Nehalem", str(tiny_bundle), *ARGS, "--verbose"], env=env, timeout=300)
        assert emulated.returncode == 0, emulated.stderr[-2000:]
        assert "libggml-cpu-sse42.so" in emulated.stderr  # ggml picked the variant this CPU can run
        native = run([str(tiny_bundle), *ARGS, "--log-disable"])
        assert emulated.stdout == native.stdout
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_manifest_states_the_minimum_glibc(tiny_bundle: Path) -> None:
    from support.commands import llmpack

    described = llmpack("inspect", str(tiny_bundle))
    glibc = next(line for line in described.stdout.splitlines() if line.startswith("runtime"))
    assert "needs glibc >= 2." in glibc
    version = glibc.split("needs glibc >= ")[1].rstrip(")")
    assert tuple(map(int, version.split("."))) <= tuple(map(int, os.confstr("CS_GNU_LIBC_VERSION").split()[1].split(".")))
