"""One executable on one chosen compute path, so that greedy text can be compared where it must be equal.

Greedy text depends on the path ggml takes: the CPU variant it picks (sse4.2 ... avx512) and whether it
repacks the weights for that variant's kernels. Two paths are pinned here:
- `sse42`: this machine, natively, with ggml's SSE4.2 variant alone offered (LLMPACK_BACKEND_DIR);
- `nehalem`: the runtime under `qemu-x86_64 -cpu Nehalem`, an emulated CPU that can run nothing newer
  than SSE4.2, so ggml picks that variant by itself.
Both compute with the same code, so their greedy text is equal on any host.

qemu-user does not follow an exec (the new program would run natively), and there are two: the launcher
execs the runtime it unpacked, and PyInstaller's one-folder bootloader re-execs itself once with its
library path set. So the launcher unpacks natively, and the runtime then runs under qemu in the
environment those two execs give it."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path

from .commands import llmpack, run

NEHALEM = ("qemu-x86_64", "-cpu", "Nehalem")
SSE42_LIBRARY = "libggml-cpu-sse42.so"


@dataclass(frozen=True)
class UnpackedRuntime:
    bundle: Path
    cache: Path
    entry: Path  # the runtime's folder in the cache

    @property
    def program(self) -> Path:
        return self.entry / "llmpack-runtime"

    def emulated_env(self) -> dict[str, str]:
        """What the launcher and PyInstaller's bootloader set before their execs (the bootloader skips
        its re-exec when these are set)."""
        return {"LLMPACK_CACHE": str(self.cache), "LLMPACK_BUNDLE": str(self.bundle),
                "LLMPACK_RUNTIME_DIR": str(self.entry), "_PYI_ARCHIVE_FILE": str(self.program),
                "_PYI_PARENT_PROCESS_LEVEL": "-1", "LD_LIBRARY_PATH": str(self.entry / "_internal")}

    def sse42_env(self, folder: Path) -> dict[str, str]:
        """Native, with ggml offered its SSE4.2 CPU variant alone."""
        folder.mkdir(parents=True, exist_ok=True)
        (variant,) = self.entry.rglob(SSE42_LIBRARY)
        link = folder / SSE42_LIBRARY
        if not link.exists():
            link.symlink_to(variant)
        return {"LLMPACK_CACHE": str(self.cache), "LLMPACK_BACKEND_DIR": str(folder)}


def unpack(bundle: Path, cache: Path) -> UnpackedRuntime:
    """Lets the launcher unpack the executable's runtime into `cache` (natively) and finds it there."""
    unpacked = run([str(bundle), "--version"], env={"LLMPACK_CACHE": str(cache)}, timeout=300)
    assert unpacked.returncode == 0, unpacked.stderr[-2000:]
    runtime = json.loads(llmpack("inspect", str(bundle), "--json").stdout)["runtime"]
    return UnpackedRuntime(bundle, cache, cache / "runtime" / runtime["sha256"][:16])


def write_wrapper(runtime: UnpackedRuntime, path: Path, cpu: str) -> Path:
    """A script at `path` that runs the executable on the `cpu` path ("sse42" or "nehalem") with the
    arguments it is given: a stand-in for the executable in commands written for it (the README's)."""
    if cpu == "nehalem":
        env, command = runtime.emulated_env(), [*NEHALEM, str(runtime.program)]
    elif cpu == "sse42":
        env, command = runtime.sse42_env(path.parent / f".{path.name}.backends"), [str(runtime.bundle)]
    else:
        raise ValueError(cpu)
    exports = " ".join(f"{name}={shlex.quote(value)}" for name, value in sorted(env.items()))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\nexport {exports}\nexec {shlex.join(command)} \"$@\"\n")
    path.chmod(0o755)
    return path
