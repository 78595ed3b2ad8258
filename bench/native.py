"""The native baseline: llama.cpp's own `llama-bench`, `llama-completion` and `llama-server`, built once
(cached) from the llama.cpp that llama-cpp-python's sdist vendors, i.e. the very version our engine
runs, with the same CMake recipe as our runtime.

The CPU backend variants (sse4.2 ... avx512) are taken from our installed wheel rather than compiled a
second time: same source, same flags, and ggml picks among them at run time exactly as in our runtime.

    .venv/bin/python bench/native.py      # prints the folder holding the binaries
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TOOLS = ("llama-bench", "llama-completion", "llama-server")


def cache_dir() -> Path:
    return Path(os.environ.get("LLMPACK_CACHE") or Path.home() / ".cache" / "llmpack") / "native"


def recipe_cmake_args() -> list[str]:
    target = subprocess.run(["bash", str(REPO / "build" / "target.sh")], capture_output=True, text=True).stdout.strip()
    recipe = REPO / "build" / "recipes" / f"{target}-cpu.env"
    text = subprocess.run(["bash", "-c", f'. "{recipe}"; printf %s "$CMAKE_ARGS"'], capture_output=True, text=True).stdout
    # One generic CPU backend is compiled (the tools need one to link); the variants come from the wheel.
    return [arg for arg in text.split() if "ALL_VARIANTS" not in arg] + ["-DGGML_CPU_ALL_VARIANTS=OFF"]


def wheel_variant_dir() -> Path:
    import importlib.util

    package = Path(importlib.util.find_spec("llama_cpp").submodule_search_locations[0])
    return package.parent / "bin"


def ensure_native_tools(log=print) -> Path:
    version = importlib.metadata.version("llama-cpp-python")
    args = recipe_cmake_args()
    key = hashlib.sha256(f"{version}|{' '.join(args)}".encode()).hexdigest()[:12]
    out = cache_dir() / f"llama.cpp-{version}-{key}"
    if all((out / "bin" / tool).exists() for tool in TOOLS):
        return out / "bin"
    with tempfile.TemporaryDirectory(prefix="llmpack-native-") as work:
        work_dir = Path(work)
        log(f"native baseline: fetching llama-cpp-python {version} sdist (vendors llama.cpp)...")
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                        f"llama-cpp-python=={version}", "-d", str(work_dir)], check=True)
        sdist = next(work_dir.glob("llama_cpp_python-*.tar.gz"))
        with tarfile.open(sdist) as archive:
            archive.extractall(work_dir, filter="data")
        source = next(work_dir.glob("llama_cpp_python-*/vendor/llama.cpp"))
        build = work_dir / "build"
        log("native baseline: compiling llama-bench, llama-completion, llama-server (once, a few minutes)...")
        subprocess.run(["cmake", "-S", str(source), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
                        "-DBUILD_SHARED_LIBS=ON", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
                        "-DLLAMA_OPENSSL=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_BUILD_UI=OFF", *args],
                       check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["cmake", "--build", str(build), "--config", "Release", "-j", str(os.cpu_count() or 2),
                        "--target", *TOOLS], check=True, stdout=subprocess.DEVNULL)
        staged = out.with_suffix(".partial")
        shutil.rmtree(staged, ignore_errors=True)
        (staged / "bin").mkdir(parents=True)
        for path in (build / "bin").iterdir():
            if path.name.startswith("libggml-cpu"):
                continue  # replaced by the wheel's variants below
            shutil.copy2(path, staged / "bin" / path.name, follow_symlinks=True)
        for variant in wheel_variant_dir().glob("libggml-cpu-*"):
            shutil.copy2(variant, staged / "bin" / variant.name)
        shutil.rmtree(out, ignore_errors=True)
        staged.rename(out)
    return out / "bin"


if __name__ == "__main__":
    print(ensure_native_tools(log=lambda message: print(message, file=sys.stderr)))
