"""llama.cpp's native side, loaded once: the ctypes bindings, the compute backends, llama.cpp's log, and
the C `FILE*` that in-place loading reads from. The only module that imports llama_cpp."""

from __future__ import annotations

import ctypes
import importlib
import importlib.util
import logging
import os
import sys
from pathlib import Path

from .. import messages
from ..errors import EngineFailure, ModelLoadFailed
from .backend_cache import unpacked_backends


def _import_bindings():
    """Imports llama_cpp's ctypes bindings without its package __init__, which would pull in numpy,
    the high-level `Llama` class and the chat formats: start-up time and size we do not need."""
    if "llama_cpp.llama_cpp" not in sys.modules and "llama_cpp" not in sys.modules:
        spec = importlib.util.find_spec("llama_cpp")
        if spec is None:
            raise EngineFailure(messages.ENGINE_NOT_INSTALLED)
        sys.modules["llama_cpp"] = importlib.util.module_from_spec(spec)
    return importlib.import_module("llama_cpp.llama_cpp")


llama = _import_bindings()
FLASH_ATTN_TYPES = {"on": llama.LLAMA_FLASH_ATTN_TYPE_ENABLED, "off": llama.LLAMA_FLASH_ATTN_TYPE_DISABLED,
                     "auto": llama.LLAMA_FLASH_ATTN_TYPE_AUTO}

_backends_loaded = False
_LOG_CALLBACK = None  # kept referenced: llama.cpp calls it from its own threads


def route_native_logs(level: int) -> None:
    """Sends llama.cpp's log to Python logging at `level` and above (GGML_LOG_LEVEL: 2=info, 3=warn)."""
    global _LOG_CALLBACK
    native_log = logging.getLogger("llama.cpp")

    def callback(native_level: int, text: bytes, _user: ctypes.c_void_p) -> None:
        if native_level >= level or native_level == 5:  # 5 = continuation of the previous line
            message = text.decode("utf-8", "replace").rstrip("\n")
            if message and message != ".":
                native_log.log(logging.WARNING if native_level >= 3 else logging.DEBUG, "%s", message)

    _LOG_CALLBACK = llama.llama_log_callback(callback)
    llama.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))


def _backend_library_dir() -> Path:
    return Path(llama.__file__).resolve().parent / "lib"


def load_backends() -> list[str]:
    """Registers llama.cpp's compute backends once, and returns the devices found.

    Our portable builds compile the CPU backend in several variants (sse4.2 ... avx512) as separate
    libraries (GGML_BACKEND_DL); ggml picks the best one this CPU supports. They must be registered
    through the very libggml that libllama links against (its SONAME, libggml.so.0): loading another
    copy would fill a second registry and llama.cpp would find no backends.
    """
    global _backends_loaded
    if not _backends_loaded:
        _backends_loaded = True

        backend_dir = os.environ.get("LLMPACK_BACKEND_DIR") or _find_backend_dir()
        if backend_dir:
            ggml = open_ggml()
            if ggml is not None and hasattr(ggml, "ggml_backend_load_all_from_path"):
                ggml.ggml_backend_load_all_from_path.argtypes = [ctypes.c_char_p]
                ggml.ggml_backend_load_all_from_path(os.fsencode(backend_dir))
        llama.llama_backend_init()
    return _device_names()


def _find_backend_dir() -> str | None:
    library_dir = _backend_library_dir()
    unpacked = unpacked_backends(library_dir)  # the frozen runtime's variants, unpacked once
    if unpacked is not None:
        return str(unpacked)
    for candidate in (library_dir.parent.parent / "bin", library_dir):  # an installed wheel
        if candidate.is_dir() and any(candidate.glob("*ggml-cpu*")):
            return str(candidate)
    return None


def open_ggml():
    """The libggml instance libllama already loaded: by SONAME first (dlopen then returns the loaded
    copy wherever it came from, e.g. PyInstaller's unpack folder), then by path."""
    lib_dir = _backend_library_dir()
    for name in ("libggml.so.0", "libggml.so", "libggml.dylib", "ggml.dll"):
        for candidate in (name, str(lib_dir / name)):
            try:
                return ctypes.CDLL(candidate, mode=getattr(os, "RTLD_GLOBAL", 0))
            except OSError:
                continue
    return None


def _device_names() -> list[str]:
    ggml = open_ggml()
    if ggml is None or not hasattr(ggml, "ggml_backend_dev_count"):
        return []
    ggml.ggml_backend_dev_count.restype = ctypes.c_size_t
    ggml.ggml_backend_dev_get.restype = ctypes.c_void_p
    ggml.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    ggml.ggml_backend_dev_name.restype = ctypes.c_char_p
    ggml.ggml_backend_dev_name.argtypes = [ctypes.c_void_p]
    return [ggml.ggml_backend_dev_name(ggml.ggml_backend_dev_get(i)).decode()
            for i in range(ggml.ggml_backend_dev_count())]


def gpu_offload_supported() -> bool:
    load_backends()
    return bool(llama.llama_supports_gpu_offload())


class CFile:
    """A C `FILE*` positioned at an offset: what llama_model_load_from_file_ptr reads from."""

    def __init__(self, path: str, offset: int) -> None:
        libc = ctypes.CDLL(None)
        libc.fopen.restype = ctypes.c_void_p
        libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
        libc.fseeko.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int]
        libc.fclose.argtypes = [ctypes.c_void_p]
        self._libc = libc
        self.pointer = libc.fopen(os.fsencode(path), b"rb")
        if not self.pointer:
            raise ModelLoadFailed(path)
        if libc.fseeko(self.pointer, offset, os.SEEK_SET) != 0:
            self.close()
            raise ModelLoadFailed(path)

    def close(self) -> None:
        if self.pointer:
            self._libc.fclose(self.pointer)
            self.pointer = None


def in_place_loading_supported() -> bool:
    return hasattr(llama, "llama_model_load_from_file_ptr") and sys.platform != "win32"
