"""llama.cpp's shared libraries found and libggml opened by path, without importing llama-cpp-python.

ggml alone knows its version, its commit and the compute backends, so `--version` asks it here and never
imports the ctypes bindings (tens of milliseconds of function declarations, and libllama). The engine
registers its backends through the same functions (runtime/engine/native.py), so both find the same ones.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import logging
import os
import re
import sys
from pathlib import Path

# ggml's log callback type: void (*)(enum ggml_log_level, const char *, void *).
LOG_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
# ggml's abort callback type: void (*)(const char * error_message).
ABORT_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_char_p)
_size, _pointer, _text = ctypes.c_size_t, ctypes.c_void_p, ctypes.c_char_p
# Every libggml function we call, with its C signature (restype, argtypes), declared once on the one
# handle open_ggml keeps: a ctypes.CDLL object holds its own declarations.
SIGNATURES = {
    "ggml_version": (_text, []),
    "ggml_commit": (_text, []),
    "ggml_log_set": (None, [LOG_CALLBACK, _pointer]),
    "ggml_log_get": (None, [ctypes.POINTER(_pointer), ctypes.POINTER(_pointer)]),
    "ggml_set_abort_callback": (_pointer, [ABORT_CALLBACK]),
    "ggml_backend_load_all_from_path": (None, [_text]),
    "ggml_backend_dev_count": (_size, []),
    "ggml_backend_dev_get": (_pointer, [_size]),
    "ggml_backend_dev_name": (_text, [_pointer]),
    "ggml_backend_dev_description": (_text, [_pointer]),
    "ggml_backend_dev_type": (ctypes.c_int, [_pointer]),
    "ggml_backend_dev_memory": (None, [_pointer, ctypes.POINTER(_size), ctypes.POINTER(_size)]),
    "ggml_backend_reg_by_name": (_pointer, [_text]),
    "ggml_backend_reg_get_proc_address": (_pointer, [_pointer, _text]),
    "ggml_backend_register": (None, [_pointer]),
    "ggml_backend_reg_dev_count": (_size, [_pointer]),
    "ggml_backend_load": (_pointer, [_text]),
}
# GPU backends a runtime may carry (libggml-NAME.so), ggml's registry name for each, and what each needs
# from the user's machine: only the driver (llamafile's and Ollama's rule; cudart and cuBLAS travel along).
GPU_BACKENDS = {"vulkan": ("Vulkan", "a Vulkan driver"), "cuda": ("CUDA", "NVIDIA's driver"),
                "hip": ("ROCm", "AMD's ROCm driver"), "sycl": ("SYCL", "Intel's oneAPI runtime")}
# Why a backend whose library loads registered nothing: its driver is missing, or found no device.
_NOTHING_FOUND = {"vulkan": "no Vulkan driver, or none with a usable device",
                  "cuda": "NVIDIA's driver found no usable GPU"}
_ggml: ctypes.CDLL | None = None
_log_callback = None  # kept referenced: ggml calls it from its own threads
_SILENT = LOG_CALLBACK(lambda _level, _text, _user: None)
_registered = False


def library_dir() -> Path | None:
    """llama_cpp/lib, where the bindings load libllama from. find_spec locates the package without
    running its __init__ (numpy, the Llama class); in the frozen runtime it names the same folder."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.origin:
        return None
    return Path(spec.origin).resolve().parent / "lib"


def find_backend_dir() -> str | None:
    library = library_dir()
    if library is None:
        return None
    # An installed wheel keeps the CPU variants in bin/; the frozen runtime beside libllama.
    for candidate in (library.parent.parent / "bin", library):
        if candidate.is_dir() and any(candidate.glob("*ggml-cpu*")):
            return str(candidate)
    return None


def open_ggml() -> ctypes.CDLL | None:
    """The libggml instance libllama loads, opened once, with SIGNATURES declared (those this build has)."""
    global _ggml
    if _ggml is None:
        _ggml = _open_ggml()
        for name, (restype, argtypes) in SIGNATURES.items() if _ggml is not None else ():
            function = getattr(_ggml, name, None)
            if function is not None:
                function.restype, function.argtypes = restype, argtypes
    return _ggml


def _open_ggml() -> ctypes.CDLL | None:
    """The copy already loaded if there is one (libllama found it by its SONAME, wherever it was), else
    the one beside libllama, else whatever the search path finds. Registering backends in another copy
    would fill a second registry, one llama.cpp never looks at."""
    names = ("libggml.so.0", "libggml.so", "libggml.dylib", "ggml.dll")
    mode = getattr(os, "RTLD_GLOBAL", 0)
    no_load = getattr(os, "RTLD_NOLOAD", 0)
    library = library_dir()
    candidates = [(name, mode | no_load) for name in names if no_load]
    candidates += [(str(library / name), mode) for name in names if library is not None]
    candidates += [(name, mode) for name in names]
    for candidate, flags in candidates:
        try:
            return ctypes.CDLL(candidate, mode=flags)
        except OSError:
            continue
    return None


def route_ggml_logs(level: int) -> None:
    """ggml's log (backend loading) to Python logging at `level` and above (2=info, 3=warn, 4=error).
    llama_log_set does this too, for llama.cpp's own log; this is for when libllama is not loaded."""
    global _log_callback
    ggml = open_ggml()
    if ggml is None or not hasattr(ggml, "ggml_log_set"):
        return
    _log_callback = LOG_CALLBACK(log_callback(level))
    ggml.ggml_log_set(_log_callback, ctypes.c_void_p(0))


def log_callback(level: int):
    native_log = logging.getLogger("llama.cpp")

    def callback(native_level: int, text: bytes, _user: ctypes.c_void_p) -> None:
        if native_level >= level or native_level == 5:  # 5 = continuation of the previous line
            message = text.decode("utf-8", "replace").rstrip("\n")
            if message and message != ".":
                native_log.log(logging.WARNING if native_level >= 3 else logging.DEBUG, "%s", message)

    return callback


def register_backends() -> None:
    """Registers the compute backends once (LLMPACK_BACKEND_DIR, else where the build put them).

    Portable builds compile the CPU backend in several variants (sse4.2 ... avx512) as separate
    libraries (GGML_BACKEND_DL); ggml loads each to score it and keeps the best this CPU supports."""
    global _registered
    if _registered:
        return
    _registered = True
    backend_dir = os.environ.get("LLMPACK_BACKEND_DIR") or find_backend_dir()
    if backend_dir:
        ggml = open_ggml()
        if ggml is not None and hasattr(ggml, "ggml_backend_load_all_from_path"):
            ggml.ggml_backend_load_all_from_path(os.fsencode(backend_dir))
            for name, path in gpu_libraries().items():
                if gpu_may_be_present(name) and hasattr(ggml, "ggml_backend_load"):
                    with _quiet_ggml(ggml):  # a GPU backend that finds no driver is not an error here
                        ggml.ggml_backend_load(os.fsencode(str(path)))


@contextlib.contextmanager
def _quiet_ggml(ggml: ctypes.CDLL):
    """ggml's log silenced for a moment (ggml_backend_load logs a backend that found nothing as an
    error, where ggml_backend_load_all is silent), then the callback in place before restored."""
    if not hasattr(ggml, "ggml_log_get"):
        yield
        return
    previous, user = ctypes.c_void_p(), ctypes.c_void_p()
    ggml.ggml_log_get(ctypes.byref(previous), ctypes.byref(user))
    ggml.ggml_log_set(_SILENT, ctypes.c_void_p(0))
    try:
        yield
    finally:
        ggml.ggml_log_set(ctypes.cast(previous, LOG_CALLBACK), user)


# The device files a GPU driver creates on Linux: without any, a GPU backend can find no GPU (Mesa's
# software Vulkan driver is skipped by ggml unless GGML_VK_VISIBLE_DEVICES names it), so it is not even
# loaded: creating a Vulkan instance loads every installed ICD (Mesa's pull in LLVM), ~40 ms measured.
_DEVICE_FILES = {"cuda": ("/dev/nvidiactl", "/dev/nvidia0"), "vulkan": ("/dev/dri/renderD*", "/dev/nvidia0", "/dev/dxg")}


def gpu_may_be_present(name: str) -> bool:
    if not sys.platform.startswith("linux") or os.environ.get("LLMPACK_GPU_PROBE") == "always":
        return True
    if name == "vulkan" and os.environ.get("GGML_VK_VISIBLE_DEVICES"):
        return True
    import glob

    return any(glob.glob(pattern) for pattern in _DEVICE_FILES.get(name, ("/",)))


def device_names() -> list[str]:
    ggml = open_ggml()
    if ggml is None or not hasattr(ggml, "ggml_backend_dev_count"):
        return []
    return [ggml.ggml_backend_dev_name(ggml.ggml_backend_dev_get(i)).decode()
            for i in range(ggml.ggml_backend_dev_count())]


def load_backends() -> list[str]:
    """The devices found, once the backends are registered (what --version lists)."""
    register_backends()
    return device_names()


_CPU_VARIANT = re.compile(r"libggml-cpu-([\w.]+?)\.so\b")


def cpu_variant() -> str | None:
    """The CPU variant ggml kept (haswell, armv8.6_2, ...: its libggml-cpu-NAME.so), read from this
    process's mapped files: ggml loads every variant to score it and unloads all but the best. None where
    there are no variants or no /proc (macOS, Windows)."""
    try:
        with open("/proc/self/maps") as maps:
            names = sorted(set(_CPU_VARIANT.findall(maps.read())))
    except OSError:
        return None
    return ", ".join(names) or None


def gpu_libraries() -> dict[str, Path]:
    """The GPU backends this runtime carries, by name: {'vulkan': path}. They are kept in gpu/ beside the
    CPU variants, out of ggml_backend_load_all's sight, and loaded one by one where a GPU may be."""
    backend_dir = os.environ.get("LLMPACK_BACKEND_DIR") or find_backend_dir()
    found: dict[str, Path] = {}
    for name in GPU_BACKENDS:
        for path in sorted(Path(backend_dir, "gpu").glob(f"*ggml-{name}*")) if backend_dir else ():
            if path.suffix in (".so", ".dll", ".dylib"):
                found.setdefault(name, path)
    return found


def gpu_status() -> list[str]:
    """Each GPU backend carried and what became of it at start: 'Vulkan (2 devices)', 'Vulkan (no device
    found)', 'CUDA (not loaded: libcuda.so.1 ... not found)'. ggml loads the backends silently; the
    reason a library did not load is asked again here (dlopen's message), only when it is wanted."""
    register_backends()
    ggml = open_ggml()
    lines = []
    for name, path in gpu_libraries().items():
        label, driver = GPU_BACKENDS[name]
        reg = ggml.ggml_backend_reg_by_name(label.encode()) if ggml is not None else None
        if not gpu_may_be_present(name):
            lines.append(f"{label} (not loaded: no GPU device file in /dev)")
            continue
        if reg:
            count = ggml.ggml_backend_reg_dev_count(reg)
            lines.append(f"{label} ({count} device{'s' if count != 1 else ''})" if count else f"{label} (no device found)")
            continue
        try:
            ctypes.CDLL(str(path), mode=getattr(os, "RTLD_LOCAL", 0))
            reason = _NOTHING_FOUND.get(name, f"{driver} found no usable device")
        except OSError as exc:  # dlopen's "libcuda.so.1: cannot open shared object file: ..."
            # Frozen, PyInstaller's ctypes hook replaces dlopen's message with its own guess ("not found
            # when the application was frozen") and keeps the real one as the cause.
            message = str(exc.__cause__ or exc)
            missing = re.search(r"([^\s:/]+\.so[.\d]*): cannot open shared object file", message)
            reason = f"{missing.group(1)} ({driver}) not found" if missing else message
        lines.append(f"{label} (not loaded: {reason})")
    return lines
