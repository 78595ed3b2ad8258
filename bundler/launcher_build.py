"""Compiles the native launcher that heads every executable: it unpacks the runtime once into the per-user
cache and runs it. runtime/launcher/launcher.c on Linux and macOS, launcher_windows.c on Windows (both
read the format through launcher_format.h). zlib is linked statically on Linux and Windows, so that the
executable needs nothing beyond the system's C library; macOS has zlib in the system.

The target decides the source and flags. The compiler is $CC (default `cc`, `gcc` on Windows) on the
target's own machine; for Windows built elsewhere, $CC_WINDOWS (default Debian's mingw-w64 cross
compiler, `x86_64-w64-mingw32-gcc`). The tests
also compile the macOS launcher here with `zig cc -target aarch64-macos` and `x86_64-macos`."""

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
LAUNCHER_DIR = Path(__file__).resolve().parent.parent / "runtime" / "launcher"
LAUNCHER_SOURCE = LAUNCHER_DIR / "launcher.c"
WINDOWS_SOURCE = LAUNCHER_DIR / "launcher_windows.c"
WINDOWS_CROSS_COMPILER = "x86_64-w64-mingw32-gcc"
FLAGS = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror"]
# How many of the compiler's last lines a failure shows.
DETAIL_LINES = 3


def _system(target: str | None) -> str:
    if target:
        return target.split("-")[0]
    return {"win32": "windows", "darwin": "darwin"}.get(sys.platform, "linux")


def compile_command(compiler: list[str], output: Path, target: str | None = None) -> list[str]:
    """The command for target (an OS-ARCH name; default: this machine)."""
    system = _system(target)
    if system == "darwin":
        return [*compiler, *FLAGS, "-o", str(output), str(LAUNCHER_SOURCE), "-lz"]
    if system == "windows":
        # -municode: wmain, UTF-16 arguments; -s: symbols stripped (no separate strip for a cross build).
        return [*compiler, *FLAGS, "-municode", "-static", "-s", "-o", str(output), str(WINDOWS_SOURCE), "-lz"]
    return [*compiler, *FLAGS, "-D_GNU_SOURCE", "-o", str(output), str(LAUNCHER_SOURCE),
            "-Wl,-Bstatic", "-lz", "-Wl,-Bdynamic"]


def default_compiler(target: str | None = None) -> str:
    if _system(target) == "windows" and sys.platform != "win32":
        return WINDOWS_CROSS_COMPILER
    return "cc" if sys.platform != "win32" else "gcc"


def build_launcher(output: Path, target: str | None = None) -> Path:
    """Compiles the launcher for target (default: this machine) into output with $CC (or the target's
    default compiler) and returns output."""
    # $CC is this machine's compiler; a cross build reads $CC_WINDOWS (say) instead.
    variable = "CC" if _system(target) == _system(None) else f"CC_{_system(target).upper()}"
    compiler = shlex.split(os.environ.get(variable) or default_compiler(target))
    if not compiler or shutil.which(compiler[0]) is None:
        raise BuildError(messages.LAUNCHER_NO_COMPILER.format(cc=" ".join(compiler) or "(empty $CC)"))
    output.parent.mkdir(parents=True, exist_ok=True)
    command = compile_command(compiler, output, target)
    log.debug("compiling the launcher: %s", shlex.join(command))
    result = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        lines = [line.strip() for line in (result.stderr + result.stdout).splitlines() if line.strip()]
        detail = "; ".join(lines[-DETAIL_LINES:]) or f"exit status {result.returncode}"
        raise BuildError(messages.LAUNCHER_COMPILE_FAILED.format(cc=compiler[0], detail=detail))
    # Symbols are a tenth of the launcher; without strip the file is only that much larger.
    if _system(target) == "linux" and sys.platform == "linux" and shutil.which("strip"):
        subprocess.run(["strip", str(output)], capture_output=True, check=False)
    return output
