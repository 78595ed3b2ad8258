"""Which runtime a build uses, and how its weights are laid out for the target's OS."""

from __future__ import annotations

from pathlib import Path

from . import messages
from .errors import BuildError
from .runtime_build import Runtime, ensure_runtime, host_target, load_runtime

# Targets with a recipe in build/recipes/ (the OS/arch part of the recipe names).
KNOWN_TARGETS = ("linux-x86_64", "linux-aarch64", "darwin-arm64", "windows-x86_64")
# Windows and macOS refuse to run executables of 4 GiB or more.
EXECUTABLE_SIZE_LIMIT = {"windows": 4 << 30, "darwin": 4 << 30}


def select_runtime(runtime: Path | None, target: str | None, rebuild: bool, gpu: str | None = None) -> Runtime:
    """A runtime given as a file or folder (built elsewhere, e.g. by the CI workflow), or this machine's
    cached one. A target other than this machine's needs a runtime built for it."""
    if target and target not in KNOWN_TARGETS:
        raise BuildError(messages.UNKNOWN_TARGET.format(target=target, targets=", ".join(KNOWN_TARGETS)))
    if runtime is not None:
        if gpu is not None:
            raise BuildError(messages.GPU_WITH_RUNTIME_DIR)
        chosen = load_runtime(runtime)
        declared = chosen.info.get("target")
        if target and declared and declared != target:
            raise BuildError(messages.TARGET_MISMATCH.format(path=chosen.path, declared=declared, target=target))
        if not declared:
            chosen = Runtime(chosen.path, {**chosen.info, "target": target or host_target()})
        return chosen
    if target and target != host_target():
        raise BuildError(messages.NO_RUNTIME_FOR_TARGET.format(target=target))
    return ensure_runtime(rebuild=rebuild, gpu=gpu)


def wants_sidecar(target: str, weights_size: int, forced: bool) -> bool:
    """True when the weights must go beside the executable: asked for, or too big for the target OS."""
    limit = EXECUTABLE_SIZE_LIMIT.get(target.split("-")[0])
    return forced or (limit is not None and weights_size + (64 << 20) >= limit)
