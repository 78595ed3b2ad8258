"""Where the layers go: -ngl, -dev, -mg and -sm resolved against the devices found, before the weights load.

llama.cpp's tools offload by default (-ngl auto) and fit the layers to the devices' free memory
(common/fit.cpp, which libllama does not export). Here the same default is kept with a simpler fit:
the weights' size and the KV cache, read from a metadata-only load (llama.cpp's no_alloc, no weights
read), against each device's free memory less llama.cpp's 1 GiB margin. Without an offload device
(no GPU, no --rpc worker) nothing is loaded twice and the CPU computes everything, as before.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import sys
from dataclasses import dataclass
from typing import Callable, Sequence

from .. import messages
from ..errors import UsageError, error_line
from .context_size import ContextSize
from .devices import CPU, GPU, IGPU, Device, all_devices, by_names
from .native import llama, open_ggml
from .native_libs import ABORT_CALLBACK
from .types import QUANTIZED_CACHE_TYPES, EngineConfig

log = logging.getLogger(__name__)

AUTO = -1  # -ngl's default: every layer on the offload devices, as many as their free memory holds
MARGIN = 1 << 30  # left free on each device, as llama.cpp's fit (fit_params_target)
SPLIT_MODES = {"none": 0, "layer": 1, "row": 2}  # enum llama_split_mode


@dataclass(frozen=True)
class ModelSize:
    """What a metadata-only load tells about the model: its weights' bytes, its repeating layers, and
    the KV cache's bytes per layer for this context."""

    weights: int
    n_layer: int
    kv_per_layer: int
    compute: int  # the compute buffers' rough size (logits and activations of one ubatch)

    @property
    def total_layers(self) -> int:
        return self.n_layer + 1  # llama.cpp counts the output layer as one more: -ngl n_layer+1 is all

    def per_layer(self) -> float:
        return self.weights / self.total_layers + self.kv_per_layer


@dataclass(frozen=True)
class Offload:
    """The layers llama.cpp gets (llama_model_params.n_gpu_layers) and the devices they go to."""

    layers: int
    devices: tuple[Device, ...] = ()
    split_mode: int = SPLIT_MODES["layer"]
    main_gpu: int = 0
    size: ModelSize | None = None

    @property
    def total(self) -> int:
        return self.size.total_layers if self.size is not None else 0

    @property
    def offloaded(self) -> int:
        if not self.devices or self.layers == 0:
            return 0
        total = self.total or self.layers
        return total if self.layers < 0 else min(self.layers, total)

    def used_devices(self) -> tuple[Device, ...]:
        if self.split_mode == SPLIT_MODES["none"] and self.devices:
            return (self.devices[min(self.main_gpu, len(self.devices) - 1)],)
        return self.devices

    def describe(self) -> str:
        """'27/27 layers on Vulkan0 (NVIDIA H100, 79.1 GiB free)'; '' when the CPU computes everything."""
        if not self.offloaded:
            return ""
        return messages.GPU_OFFLOAD.format(offloaded=self.offloaded, total=self.total or "?",
                                           devices=", ".join(d.describe() for d in self.used_devices()))


def offload_devices(names: Sequence[str] | None) -> list[Device]:
    """-dev's devices, else llama.cpp's default: every GPU (integrated ones too) and --rpc worker."""
    if names is not None:
        return by_names(names, allow_cpu=False)
    return [d for d in all_devices() if d.kind in (GPU, IGPU)]


def plan_offload(requested: int, names: Sequence[str] | None, split_mode: str, main_gpu: int,
                 measure: Callable[[], ModelSize | None]) -> Offload:
    """`measure` runs a metadata-only load; it is called only when there is a device to offload to."""
    devices = tuple(offload_devices(names))
    mode = SPLIT_MODES[split_mode]
    if requested == 0 or not devices:
        return Offload(0 if requested == AUTO else requested, devices, mode, main_gpu)
    if main_gpu >= len(devices):
        raise UsageError(messages.BAD_VALUE.format(
            flag="-mg/--main-gpu", reason=f"{main_gpu} is no offload device here (there are {len(devices)}: "
                                          f"{', '.join(d.name for d in devices)})"))
    size = measure()
    layers = requested
    if requested == AUTO:
        usable = [devices[main_gpu]] if mode == SPLIT_MODES["none"] else list(devices)
        layers = fit_layers(size, usable) if size is not None else AUTO
        if size is not None and layers != AUTO and layers < size.total_layers:
            log.info("-ngl auto: %d of %d layers fit in the free memory of %s (1 GiB left free on each)",
                     layers, size.total_layers, ", ".join(d.name for d in usable))
    return Offload(layers, devices, mode, main_gpu, size)


def fit_layers(size: ModelSize, devices: Sequence[Device]) -> int:
    """How many layers the devices' free memory holds, less the margin and the compute buffers: all of
    them (llama.cpp's -1) when the whole model fits."""
    free = sum(max(0, d.free - MARGIN) for d in devices if d.kind != CPU) - size.compute
    if size.per_layer() * size.total_layers <= free:
        return AUTO
    return max(0, int(free // size.per_layer())) if size.per_layer() > 0 else AUTO


def measure(model, config: EngineConfig) -> ModelSize | None:
    """The sizes a metadata-only load (llama.cpp's no_alloc: no weights read, nothing allocated) gives:
    the weights, the layers, the KV cache per layer for this context, the compute buffers. Frees it."""
    if not model:
        return None
    try:
        n_layer, n_embd, n_head = llama.llama_model_n_layer(model), llama.llama_model_n_embd(model), max(1, llama.llama_model_n_head(model))
        n_head_kv = llama.llama_model_n_head_kv(model) or n_head
        cells = ContextSize.of(config, llama.llama_model_n_ctx_train(model)).cache_cells(config.embeddings)
        bytes_per_value = 1 if {config.type_k, config.type_v} & QUANTIZED_CACHE_TYPES else 2
        kv = cells * 2 * (n_embd // n_head) * n_head_kv * bytes_per_value
        n_vocab = llama.llama_vocab_n_tokens(llama.llama_model_get_vocab(model))
        compute = min(config.n_batch, config.n_ubatch) * (n_vocab + 16 * n_embd) * 4
        return ModelSize(int(llama.llama_model_size(model)), n_layer, kv, compute)
    finally:
        llama.llama_model_free(model)


@contextlib.contextmanager
def abort_as_one_line(offload: Offload, words: Callable[[], dict]):
    """ggml aborts the process on some GPU failures while a model loads (a KV cache tensor larger than
    the device can address, a refused allocation): during the load, that is one line and exit 1, not
    a backtrace. Not with --rpc workers, whose own handler (engine/rpc.py) reports a lost worker."""
    lib = open_ggml()
    if not offload.offloaded or lib is None or not hasattr(lib, "ggml_set_abort_callback") or \
            any(d.name.startswith("RPC") for d in offload.devices):
        yield
        return

    def on_abort(native_message: bytes | None) -> None:
        reason = (native_message or b"").decode("utf-8", "replace").strip().rsplit(": ", 1)[-1]
        try:
            sys.stdout.flush()
        except (OSError, ValueError):
            pass
        sys.stderr.write(error_line(messages.GPU_LOAD_ABORTED.format(reason=reason, **words())) + "\n")
        sys.stderr.flush()
        os._exit(1)

    callback = ABORT_CALLBACK(on_abort)
    previous = lib.ggml_set_abort_callback(callback)
    try:
        yield
    finally:
        lib.ggml_set_abort_callback(ctypes.cast(previous, ABORT_CALLBACK) if previous else ABORT_CALLBACK())
        del callback
