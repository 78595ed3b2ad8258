"""The CUDA flavour without CUDA here: asking for a backend this machine did not build is one line, and a
CUDA backend whose driver is missing is reported by name (--version, the -ngl warning), the CPU computing.

The real libggml-cuda.so takes hours to compile on 2 cores (build/gpu-backend.sh cuda; CI builds it), so
the runtime's side is tested with a stand-in that, like it, needs NVIDIA's driver (libcuda.so.1) to load."""

from __future__ import annotations

import subprocess
from pathlib import Path

from support.commands import LLMPACK, llmpack, one_error_line, run

from llmpack.bundler import messages as bundler_messages

SITE_BIN = Path(subprocess.run([LLMPACK.replace("llmpack", "python"), "-c",
                                "import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec('llama_cpp')"
                                ".origin).parent.parent / 'bin')"], capture_output=True, text=True, check=True).stdout.strip())


def test_a_gpu_backend_not_built_here_is_one_line(tiny_gguf: Path, tmp_path: Path) -> None:
    result = llmpack("build", str(tiny_gguf), "-o", str(tmp_path / "x.llmpack"), "--gpu", "cuda")
    line = one_error_line(result)
    assert line == "error: " + bundler_messages.GPU_BACKEND_MISSING.format(name="cuda", available="vulkan")
    unknown = one_error_line(llmpack("build", str(tiny_gguf), "-o", str(tmp_path / "x.llmpack"), "--gpu", "metal"))
    assert unknown.endswith(bundler_messages.GPU_UNKNOWN.format(name="metal"))
    assert not (tmp_path / "x.llmpack").exists()


def _fake_cuda_backend_dir(tmp_path: Path) -> Path:
    """This machine's backends, plus gpu/libggml-cuda.so that needs libcuda.so.1 as the real one does."""
    folder = tmp_path / "backends"
    (folder / "gpu").mkdir(parents=True)
    for library in SITE_BIN.glob("*.so"):
        (folder / library.name).symlink_to(library)
    stub = tmp_path / "stub" / "libcuda.so"
    stub.parent.mkdir()
    subprocess.run(["cc", "-shared", "-x", "c", "-Wl,-soname,libcuda.so.1", "-o", str(stub), "-"],
                   input="void cuInit(void) {}", text=True, check=True)
    subprocess.run(["cc", "-shared", "-o", str(folder / "gpu" / "libggml-cuda.so"), "-x", "c", "-", "-x", "none", str(stub)],
                   input="extern void cuInit(void); void *ggml_backend_init(void) { cuInit(); return 0; }",
                   text=True, check=True)
    return folder


def test_a_cuda_backend_without_its_driver_names_the_driver(tiny_gguf: Path, tmp_path: Path) -> None:
    env = {"LLMPACK_BACKEND_DIR": str(_fake_cuda_backend_dir(tmp_path)), "LLMPACK_GPU_PROBE": "always"}
    version = run([LLMPACK, "run", "--version"], env=env)
    backends = next(line for line in version.stdout.splitlines() if line.startswith("backends: "))
    assert "; CUDA (not loaded: libcuda.so.1 (NVIDIA's driver) not found);" in backends, backends
    result = run([LLMPACK, "run", "-m", str(tiny_gguf), "--cli", "-p", "hi", "-n", "2", "-c", "512", "-ngl", "99"], env=env)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "warning: -ngl 99" in line]
    assert len(warnings) == 1 and "CUDA (not loaded: libcuda.so.1 (NVIDIA's driver) not found)" in warnings[0], result.stderr
