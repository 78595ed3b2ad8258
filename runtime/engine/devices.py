"""ggml's registry of compute devices (the CPU, GPUs, --rpc workers), through the libggml that libllama
loaded: what -dev names, what --rpc-server serves, and what the start log lists."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Sequence

from .. import messages
from ..errors import EngineFailure, UsageError
from .native import llama, load_backends, open_ggml

# enum ggml_backend_dev_type
CPU, GPU, IGPU, ACCEL, META = range(5)


@dataclass(frozen=True)
class Device:
    handle: int  # ggml_backend_dev_t
    name: str  # "CPU", "CUDA0", "RPC0", ...
    description: str  # an RPC device's is its worker's HOST:PORT
    kind: int
    free: int  # bytes
    total: int

    def describe(self) -> str:
        return f"{self.name} ({self.description}, {self.free / 2**30:.1f} GiB free)"


def ggml() -> ctypes.CDLL:
    lib = open_ggml()
    if lib is None:
        raise EngineFailure(messages.ENGINE_NOT_INSTALLED)
    return lib


def _device(lib: ctypes.CDLL, handle: int) -> Device:
    free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
    lib.ggml_backend_dev_memory(handle, ctypes.byref(free), ctypes.byref(total))
    return Device(handle, lib.ggml_backend_dev_name(handle).decode(), lib.ggml_backend_dev_description(handle).decode(),
                  lib.ggml_backend_dev_type(handle), free.value, total.value)


def all_devices() -> list[Device]:
    load_backends()
    lib = ggml()
    return [_device(lib, lib.ggml_backend_dev_get(i)) for i in range(lib.ggml_backend_dev_count())]


def by_names(names: Sequence[str], allow_cpu: bool) -> list[Device]:
    """The devices -dev names, in its order. Raises UsageError for a name that is no device here (and,
    unless `allow_cpu`, for the CPU, as llama.cpp's -dev: layers not offloaded stay on it anyway)."""
    devices = {device.name: device for device in all_devices()}
    chosen = []
    for name in names:
        device = devices.get(name)
        if device is None:
            raise UsageError(messages.DEVICE_UNKNOWN.format(name=name, available=", ".join(devices) or "none"))
        if device.kind == CPU and not allow_cpu:
            raise UsageError(messages.DEVICE_IS_CPU.format(name=name))
        chosen.append(device)
    return chosen


def worker_devices(names: Sequence[str] | None) -> list[Device]:
    """What an RPC worker serves, as llama.cpp's rpc-server picks: -dev's, else every GPU, else the CPU."""
    if names:
        return by_names(names, allow_cpu=True)
    devices = all_devices()
    return [d for d in devices if d.kind not in (CPU, ACCEL)] or [d for d in devices if d.kind == CPU][:1]


def offload_list(names: Sequence[str]) -> ctypes.Array:
    """llama_model_params.devices for -dev: the devices, then NULL (only NULL: offload nothing)."""
    handles = [device.handle for device in by_names(names, allow_cpu=False)]
    return (ctypes.c_void_p * (len(handles) + 1))(*handles, None)


def tensor_split_array(shares: Sequence[float]) -> ctypes.Array:
    """llama_model_params.tensor_split: llama_max_devices() floats, the unnamed ones 0."""
    limit = llama.llama_max_devices()
    if len(shares) > limit:
        raise UsageError(messages.TENSOR_SPLIT_TOO_MANY.format(n=len(shares), limit=limit))
    return (ctypes.c_float * limit)(*shares)
