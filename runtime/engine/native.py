"""llama.cpp's native side, loaded once: the ctypes bindings, the compute backends, llama.cpp's log, and
the C `FILE*` that in-place loading reads from. The only module that imports llama_cpp."""

from __future__ import annotations

import ctypes
import importlib
import importlib.util
import os
import sys

from .. import messages
from ..errors import EngineFailure, ModelLoadFailed
from .native_libs import device_names, log_callback, register_backends

# Re-exported: the server's fingerprint reads ggml's version through this module.
from .native_libs import open_ggml as open_ggml


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
    _LOG_CALLBACK = llama.llama_log_callback(log_callback(level))
    llama.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))


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
        register_backends()
        llama.llama_backend_init()
    return device_names()


def gpu_offload_supported() -> bool:
    """A device to offload layers to: a GPU, or an --rpc worker's. (llama_supports_gpu_offload says
    yes as soon as the RPC backend is loaded, workers or none.)"""
    load_backends()
    ggml = open_ggml()
    if ggml is None or not hasattr(ggml, "ggml_backend_dev_type"):
        return bool(llama.llama_supports_gpu_offload())
    offload_types = (1, 2)  # GGML_BACKEND_DEVICE_TYPE_GPU, _IGPU (RPC devices are GPU)
    return any(ggml.ggml_backend_dev_type(ggml.ggml_backend_dev_get(i)) in offload_types
               for i in range(ggml.ggml_backend_dev_count()))


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
