"""The CUDA flavour. Where this machine built the CUDA backend (LLMPACK_GPU=vulkan,cuda build/setup.sh:
about an hour on 2 cores, so CI's fresh clone does not), the real file is built and run: without NVIDIA's
driver it names the driver (--version, the -ngl warning) and the CPU computes. Where it did not, asking
for it is one line. The runtime's side is also tested with a stand-in that, like the real library, needs
the driver (libcuda.so.1) to load, so both paths are checked on every machine."""

from __future__ import annotations

import subprocess
from pathlib import Path

from support.commands import LLMPACK, llmpack, one_error_line, run

from llmpack.bundler import messages as bundler_messages

SITE_BIN = Path(subprocess.run([LLMPACK.replace("llmpack", "python"), "-c",
                                "import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec('llama_cpp')"
                                ".origin).parent.parent / 'bin')"], capture_output=True, text=True, check=True).stdout.strip())
NO_DRIVER_HERE = "CUDA (not loaded: libcuda.so.1 (NVIDIA's driver) not found)"
CUDA_LIBRARIES = ("libggml-cuda.so", "libcudart.so.13", "libcublas.so.13", "libcublasLt.so.13")


def _cuda_built_here() -> bool:
    return (SITE_BIN / "gpu" / "libggml-cuda.so").is_file()


def test_the_cuda_flavour_where_it_was_built_and_where_not(tiny_gguf: Path, tmp_path: Path) -> None:
    output = tmp_path / "x.llmpack"
    result = llmpack("build", str(tiny_gguf), "-o", str(output), "--gpu", "vulkan,cuda")
    if not _cuda_built_here():
        line = one_error_line(result)
        assert line == "error: " + bundler_messages.GPU_BACKEND_MISSING.format(name="cuda", available="vulkan")
        assert not output.exists()
        return
    assert result.returncode == 0, result.stderr
    env = {"LLMPACK_GPU_PROBE": "always", "LLMPACK_CACHE": str(tmp_path / "cache")}  # as if a GPU were here
    version = run([str(output), "--version"], env=env)
    backends = next(line for line in version.stdout.splitlines() if line.startswith("backends: "))
    # The frozen runtime's ctypes hook hides dlopen's reason; the driver is still named.
    assert f"; {NO_DRIVER_HERE};" in backends, backends
    carried = {p.name for p in (tmp_path / "cache").rglob("lib/gpu/*")}
    assert set(CUDA_LIBRARIES) <= carried and not any(n.startswith("libcuda.so") for n in carried), carried
    answer = run([str(output), "--cli", "-p", "hi", "-n", "2", "-c", "512", "-ngl", "99"], env=env)
    assert answer.returncode == 0, answer.stderr
    warnings = [line for line in answer.stderr.splitlines() if "warning: -ngl 99" in line]
    assert len(warnings) == 1 and NO_DRIVER_HERE in warnings[0], answer.stderr
    # With a driver present, the library loads: it needs libcuda.so.1 by name for the driver calls it
    # makes itself (cuMemCreate...), which a stub left out of its link would leave unresolved. A
    # stand-in driver that knows no GPU makes CUDA's start fail cleanly: no device, the CPU computes.
    env["LD_LIBRARY_PATH"] = str(_stand_in_driver(tmp_path))
    version = run([str(output), "--version"], env=env)
    assert "; CUDA (no device found);" in version.stdout, version.stdout + version.stderr
    answer = run([str(output), "--cli", "-p", "hi", "-n", "2", "-c", "512", "-ngl", "99"], env=env)
    warnings = [line for line in answer.stderr.splitlines() if "warning: -ngl 99" in line]
    assert answer.returncode == 0 and len(warnings) == 1 and "CUDA (no device found)" in warnings[0], answer.stderr


def _stand_in_driver(tmp_path: Path) -> Path:
    """libcuda.so.1 whose every entry point answers CUDA_ERROR_NO_DEVICE (100)."""
    folder = tmp_path / "driver"
    folder.mkdir()
    names = ("cuInit cuDriverGetVersion cuGetProcAddress cuGetProcAddress_v2 cuDeviceGet cuDeviceGetCount "
             "cuDeviceGetAttribute cuGetErrorString cuMemAddressFree cuMemAddressReserve cuMemCreate "
             "cuMemGetAllocationGranularity cuMemMap cuMemRelease cuMemSetAccess cuMemUnmap").split()
    source = "".join(f"int {name}(void) {{ return 100; }}\n" for name in names)
    subprocess.run(["cc", "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o", str(folder / "libcuda.so.1"), "-x", "c", "-"],
                   input=source, text=True, check=True)
    return folder


def test_an_unknown_gpu_backend_is_one_line(tiny_gguf: Path, tmp_path: Path) -> None:
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
