"""Builds the runtime for this machine, once per content: runtime/ + llama-cpp-python + Python frozen by
PyInstaller in one-folder mode, packed (runtime_pack.py) behind our native launcher
(runtime/launcher/launcher.c) into one file without weights. The cache key hashes the runtime's sources
(the launcher's included), the spec, the native libraries and the tool versions, so bundling a model
with an unchanged runtime costs only the copy of the weights."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import messages
from .bundle import write_bare_runtime
from .errors import BuildError
from .launcher_build import build_launcher
from .macos_signing import sign_mach_o_files, signing_identity
from .layout import RuntimeImage
from .runtime_pack import write_pack

log = logging.getLogger(__name__)

RUNTIME_NAME = "llmpack-runtime"
RUNTIME_INFO = "runtime.json"
# The program the launcher runs, the pack's first entry: PyInstaller names it .exe on Windows.
PROGRAM_NAME = RUNTIME_NAME + (".exe" if sys.platform == "win32" else "")


@dataclass(frozen=True)
class Runtime:
    """A runtime file (launcher + pack, no weights) and what it was built for (runtime.json beside it)."""

    path: Path
    info: dict[str, Any]

    @property
    def target(self) -> str:
        return str(self.info.get("target", "unknown"))


def load_runtime(path: Path) -> Runtime:
    """A runtime from a file (its runtime.json, if any, describes it) or a folder holding both."""
    if path.is_dir():
        candidates = [path / RUNTIME_NAME, path / f"{RUNTIME_NAME}.exe"]
        path = next((c for c in candidates if c.exists()), candidates[0])
    if not path.is_file():
        raise BuildError(messages.RUNTIME_NOT_FOUND.format(path=path))
    info_file = path.parent / RUNTIME_INFO
    info = json.loads(info_file.read_text()) if info_file.is_file() else {}
    return Runtime(path, info)
# Ignored when hashing and staging the runtime's sources.
_IGNORED = ("__pycache__", ".pyc", ".pyo")


def cache_root() -> Path:
    """The launcher's rule (runtime/launcher/launcher.c): $LLMPACK_CACHE, $XDG_CACHE_HOME/llmpack, ~/.cache/llmpack;
    on Windows (launcher_windows.c) %LLMPACK_CACHE%, %LOCALAPPDATA%\\llmpack."""
    if os.environ.get("LLMPACK_CACHE"):
        return Path(os.environ["LLMPACK_CACHE"])
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "llmpack"
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "llmpack"
    return Path.home() / ".cache" / "llmpack"


def host_target() -> str:
    """This machine's target name, as in build/ and `--target`: linux-x86_64, darwin-arm64, ..."""
    system = {"win32": "windows", "darwin": "darwin"}.get(sys.platform, sys.platform.rstrip("0123456789"))
    machine = platform.machine().lower().replace("amd64", "x86_64").replace("arm64", "aarch64")
    if system == "darwin" and machine == "aarch64":
        machine = "arm64"
    return f"{system}-{machine}"


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise BuildError(messages.ENGINE_MISSING if name == "llama_cpp" else messages.PACKAGE_MISSING.format(name=name))
    return Path(list(spec.submodule_search_locations)[0])


def source_dirs() -> dict[str, Path]:
    """The packages frozen into the runtime, found without importing them."""
    return {"runtime": _package_dir("llmpack.runtime"), "templates": _package_dir("llmpack.templates")}


# ggml's GPU backends a runtime can carry: libggml-NAME.so in gpu/ beside the CPU variants (build/gpu-backend.sh),
# with the runtime libraries each needs from its vendor (CUDA's: cudart, cuBLAS), never the driver.
GPU_BACKENDS = ("vulkan", "cuda")
DEFAULT_GPU = ("vulkan",)


def available_gpu_backends() -> list[str]:
    names = {p.name for d in native_library_dirs() if (d / "gpu").is_dir() for p in (d / "gpu").iterdir()}
    return [b for b in GPU_BACKENDS if any(n.startswith(f"libggml-{b}.") or n == f"ggml-{b}.dll" for n in names)]


def choose_gpu(request: str | None) -> tuple[str, ...]:
    """--gpu's backends: None is the default (Vulkan where it was built, else none, with a warning)."""
    available = available_gpu_backends()
    if request is None:
        chosen = tuple(b for b in DEFAULT_GPU if b in available)
        if not chosen:
            log.warning(messages.GPU_DEFAULT_MISSING)
        return chosen
    names = [n.strip().lower() for n in request.split(",") if n.strip()]
    if names == ["none"]:
        return ()
    for name in names:
        if name not in GPU_BACKENDS:
            raise BuildError(messages.GPU_UNKNOWN.format(name=name))
        if name not in available:
            raise BuildError(messages.GPU_BACKEND_MISSING.format(name=name, available=", ".join(available) or "none"))
    return tuple(b for b in GPU_BACKENDS if b in names)


def native_library_dirs() -> list[Path]:
    """llama-cpp-python's shared libraries, and the CPU backend variants of a GGML_BACKEND_DL build."""
    package = _package_dir("llama_cpp")
    candidates = [package / "lib", package.parent / "bin"]
    return [d for d in candidates if d.is_dir()]


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and not any(i in p.name or i in p.parts for i in _IGNORED))


def runtime_key(gpu: tuple[str, ...] = ()) -> str:
    digest = hashlib.sha256()
    digest.update(f"gpu={','.join(gpu)}\0".encode())
    for label, directory in sorted(source_dirs().items()):
        for path in _files(directory):
            digest.update(f"{label}/{path.relative_to(directory).as_posix()}\0".encode())
            digest.update(path.read_bytes())
    for directory in native_library_dirs():
        for path in _files(directory):
            stat = path.stat()
            digest.update(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    for dist in ("llama-cpp-python", "pyinstaller", "jinja2", "fastapi", "uvicorn", "prompt_toolkit"):
        digest.update(f"{dist}={_version(dist)}\0".encode())
    digest.update(f"{sys.version}\0{host_target()}".encode())
    if signing_identity():  # a signed runtime is another file (the key of an unsigned one is unchanged)
        digest.update(f"codesign={signing_identity()}\0".encode())
    return digest.hexdigest()[:16]


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def runtime_versions() -> dict[str, str]:
    return {"llama_cpp_python": _version("llama-cpp-python"), "python": platform.python_version(),
            "pyinstaller": _version("pyinstaller")}


def ensure_runtime(rebuild: bool = False, gpu: str | None = None) -> Runtime:
    """The cached runtime for this machine with --gpu's backends, built first if needed."""
    backends = choose_gpu(gpu)
    key = runtime_key(backends)
    target = cache_root() / "runtimes" / f"{host_target()}-{key}" / RUNTIME_NAME
    if target.exists() and (target.parent / RUNTIME_INFO).exists() and not rebuild:
        log.info("runtime: %s (cached)", target)
        return load_runtime(target)
    log.info("freezing the runtime with PyInstaller (once per runtime version; about a minute)...")
    started = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="llmpack-freeze-") as work:
        folder = _freeze(Path(work), target.parent / "freeze.log", backends)
        launcher = build_launcher(Path(work) / "launcher")
        sign_mach_o_files([launcher, *folder.rglob("*")])  # macOS with a signing identity only
        with open(Path(work) / "pack", "w+b") as pack:
            length, digest = write_pack(folder, pack, PROGRAM_NAME)
            pack.seek(0)
            image = RuntimeImage(launcher.read_bytes(), pack.read(), digest)
        info = {"target": host_target(), "key": key, "min_glibc": minimum_glibc([launcher, *folder.rglob("*")]),
                "runtime_sha256": digest, "gpu": list(backends), **runtime_versions()}
        # runtime.json first: the runtime file, written atomically, is what marks the entry complete.
        (target.parent / RUNTIME_INFO).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        write_bare_runtime(image, target)
    log.info("runtime built in %.0f s: %s (%d bytes packed)", time.perf_counter() - started, target, length)
    return Runtime(target, info)


_GLIBC_VERSION = re.compile(rb"GLIBC_(\d+)\.(\d+)(?:\.(\d+))?\x00")


def minimum_glibc(files: list[Path]) -> str | None:
    """The newest GLIBC_x.y symbol version that the launcher or any frozen library requires: the oldest
    glibc (so Linux distribution) the executable runs on. None off Linux."""
    if not host_target().startswith("linux"):
        return None
    versions = set()
    for path in files:
        if path.is_file() and not path.is_symlink():
            with open(path, "rb") as f:
                if f.read(4) != b"\x7fELF":
                    continue
                f.seek(0)
                versions |= {tuple(int(part or 0) for part in match) for match in _GLIBC_VERSION.findall(f.read())}
    return ".".join(map(str, max(versions)[:2])) if versions else None


def _stage_sources(stage: Path) -> None:
    """Copies the runtime as the package `llmpack.runtime` (plus templates) into a clean folder:
    what PyInstaller analyses is exactly what the cache key hashed."""
    package = stage / "llmpack"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    for label, directory in source_dirs().items():
        for path in _files(directory):
            destination = package / label / path.relative_to(directory)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, destination)


def _freeze(work: Path, log_path: Path, gpu: tuple[str, ...]) -> Path:
    stage = work / "stage"
    _stage_sources(stage)
    templates = source_dirs()["templates"]
    env = dict(os.environ, LLMPACK_STAGE=str(stage), LLMPACK_RUNTIME_NAME=RUNTIME_NAME,
               LLMPACK_NATIVE_DIRS=os.pathsep.join(str(d) for d in native_library_dirs()),
               LLMPACK_GPU_BACKENDS=",".join(gpu), PYTHONHASHSEED="0")
    command = [sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN",
               "--distpath", str(work / "dist"), "--workpath", str(work / "build"),
               str(templates / "runtime.spec")]
    with open(log_path, "wb") as log_file:
        status = subprocess.run(command, env=env, stdout=log_file, stderr=subprocess.STDOUT, cwd=work).returncode
    built = work / "dist" / RUNTIME_NAME
    if status != 0 or not (built / PROGRAM_NAME).exists():
        raise BuildError(messages.FREEZE_FAILED.format(log=log_path))
    return built


def export_runtime(directory: Path | None, rebuild: bool, gpu: str | None = None) -> Path:
    """`llmpack runtime`: this machine's runtime, optionally copied with its runtime.json into a folder
    (what the CI workflow uploads, and what `llmpack build --runtime-dir` takes elsewhere)."""
    runtime = ensure_runtime(rebuild=rebuild, gpu=gpu)
    if directory is None:
        return runtime.path
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy2(runtime.path, directory / runtime.path.name)
    shutil.copy2(runtime.path.parent / RUNTIME_INFO, directory / RUNTIME_INFO)
    return directory / runtime.path.name
