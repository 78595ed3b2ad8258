"""Freezes the runtime (runtime/ + llama-cpp-python + Python) into a PyInstaller onefile executable,
once per content: the cache key hashes the runtime's sources, the spec, the native libraries and the
tool versions, so bundling a model with an unchanged runtime costs only the copy of the weights."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import messages
from .errors import BuildError

log = logging.getLogger(__name__)

RUNTIME_NAME = "llmpack-runtime"
# Ignored when hashing and staging the runtime's sources.
_IGNORED = ("__pycache__", ".pyc", ".pyo")


def cache_root() -> Path:
    return Path(os.environ.get("LLMPACK_CACHE") or Path.home() / ".cache" / "llmpack")


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
        raise BuildError(messages.ENGINE_MISSING if name == "llama_cpp" else f"error: package {name} not found")
    return Path(list(spec.submodule_search_locations)[0])


def source_dirs() -> dict[str, Path]:
    """The packages frozen into the runtime, found without importing them."""
    return {"runtime": _package_dir("llmpack.runtime"), "templates": _package_dir("llmpack.templates")}


def native_library_dirs() -> list[Path]:
    """llama-cpp-python's shared libraries, and the CPU backend variants of a GGML_BACKEND_DL build."""
    package = _package_dir("llama_cpp")
    candidates = [package / "lib", package.parent / "bin"]
    return [d for d in candidates if d.is_dir()]


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and not any(i in p.name or i in p.parts for i in _IGNORED))


def runtime_key() -> str:
    digest = hashlib.sha256()
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
    return digest.hexdigest()[:16]


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def runtime_versions() -> dict[str, str]:
    return {"llama_cpp_python": _version("llama-cpp-python"), "python": platform.python_version(),
            "pyinstaller": _version("pyinstaller")}


def ensure_runtime(rebuild: bool = False) -> Path:
    """The cached runtime executable for this machine, frozen first if needed."""
    key = runtime_key()
    target = cache_root() / "runtimes" / f"{host_target()}-{key}" / RUNTIME_NAME
    if target.exists() and not rebuild:
        log.info("runtime: %s (cached)", target)
        return target
    log.info("freezing the runtime with PyInstaller (once per runtime version; about a minute)...")
    started = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="llmpack-freeze-") as work:
        built = _freeze(Path(work), target.parent / "freeze.log")
        staged = target.with_suffix(".partial")
        shutil.copy2(built, staged)
        os.replace(staged, target)
    log.info("runtime frozen in %.0f s: %s", time.perf_counter() - started, target)
    return target


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


def _freeze(work: Path, log_path: Path) -> Path:
    stage = work / "stage"
    _stage_sources(stage)
    templates = source_dirs()["templates"]
    env = dict(os.environ, LLMPACK_STAGE=str(stage), LLMPACK_RUNTIME_NAME=RUNTIME_NAME,
               LLMPACK_NATIVE_DIRS=os.pathsep.join(str(d) for d in native_library_dirs()),
               PYTHONHASHSEED="0")
    command = [sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN",
               "--distpath", str(work / "dist"), "--workpath", str(work / "build"),
               str(templates / "runtime.spec")]
    with open(log_path, "wb") as log_file:
        status = subprocess.run(command, env=env, stdout=log_file, stderr=subprocess.STDOUT, cwd=work).returncode
    built = work / "dist" / (RUNTIME_NAME + (".exe" if sys.platform == "win32" else ""))
    if status != 0 or not built.exists():
        raise BuildError(messages.FREEZE_FAILED.format(log=log_path))
    return built
