"""Compiles the native launcher (runtime/launcher/launcher.c) that heads every executable: it unpacks
the runtime once into the per-user cache and execs it. zlib is linked statically on Linux, so that the
executable needs nothing beyond the C library."""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from . import messages
from .errors import BuildError

log = logging.getLogger(__name__)

# Beside bundler/ in a checkout and in an installed wheel alike (both are folders of `llmpack`).
LAUNCHER_SOURCE = Path(__file__).resolve().parent.parent / "runtime" / "launcher" / "launcher.c"
FLAGS = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror"]
# How many of the compiler's last lines a failure shows.
DETAIL_LINES = 3


def compile_command(compiler: list[str], output: Path) -> list[str]:
    if sys.platform == "darwin":
        return [*compiler, *FLAGS, "-o", str(output), str(LAUNCHER_SOURCE), "-lz"]
    return [*compiler, *FLAGS, "-D_GNU_SOURCE", "-o", str(output), str(LAUNCHER_SOURCE),
            "-Wl,-Bstatic", "-lz", "-Wl,-Bdynamic"]


def build_launcher(output: Path) -> Path:
    """Compiles the launcher into output with $CC (or cc) and returns output."""
    compiler = shlex.split(os.environ.get("CC") or "cc")
    if not compiler or shutil.which(compiler[0]) is None:
        raise BuildError(messages.LAUNCHER_NO_COMPILER.format(cc=" ".join(compiler) or "(empty $CC)"))
    output.parent.mkdir(parents=True, exist_ok=True)
    command = compile_command(compiler, output)
    log.debug("compiling the launcher: %s", shlex.join(command))
    result = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        lines = [line.strip() for line in (result.stderr + result.stdout).splitlines() if line.strip()]
        detail = "; ".join(lines[-DETAIL_LINES:]) or f"exit status {result.returncode}"
        raise BuildError(messages.LAUNCHER_COMPILE_FAILED.format(cc=compiler[0], detail=detail))
    # Symbols are a tenth of the launcher; without strip the file is only that much larger.
    if sys.platform != "darwin" and shutil.which("strip"):
        subprocess.run(["strip", str(output)], capture_output=True, check=False)
    return output
