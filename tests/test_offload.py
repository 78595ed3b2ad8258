"""-ngl auto's fit (runtime/engine/offload.py) on made-up devices: every layer when the model fits in the
free memory less llama.cpp's 1 GiB margin, as many as fit when it does not, none without room."""

from __future__ import annotations

import pytest

from llmpack.runtime.engine import offload
from llmpack.runtime.engine.devices import GPU, Device
from llmpack.runtime.errors import UsageError

GiB = 1 << 30


def gpu(name: str, free_gib: float) -> Device:
    return Device(0, name, "a test GPU", GPU, int(free_gib * GiB), int(free_gib * GiB))


# 25 layers (24 blocks + output) of 0.2 GiB weights and 0.04 GiB of KV cache each, 0.5 GiB of compute buffers.
SIZE = offload.ModelSize(weights=5 * GiB, n_layer=24, kv_per_layer=int(0.04 * GiB), compute=GiB // 2)


def test_a_model_that_fits_goes_whole() -> None:
    assert offload.fit_layers(SIZE, [gpu("Vulkan0", 8)]) == offload.AUTO
    assert offload.fit_layers(SIZE, [gpu("Vulkan0", 5), gpu("Vulkan1", 5)]) == offload.AUTO  # free memory adds up


def test_a_model_that_does_not_fit_gets_what_fits() -> None:
    # 4 GiB free - 1 GiB margin - 0.5 GiB compute = 2.5 GiB, at 0.24 GiB a layer: 10 layers.
    assert offload.fit_layers(SIZE, [gpu("Vulkan0", 4)]) == 10
    assert offload.fit_layers(SIZE, [gpu("Vulkan0", 1.2)]) == 0


def test_the_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(offload, "offload_devices", lambda names: [gpu("Vulkan0", 4)])
    planned = offload.plan_offload(offload.AUTO, None, "layer", 0, lambda: SIZE)
    assert (planned.layers, planned.offloaded, planned.total) == (10, 10, 25)
    assert planned.describe().startswith("10/25 layers on Vulkan0 (a test GPU, 4.0 GiB free)")
    whole = offload.plan_offload(99, None, "layer", 0, lambda: SIZE)  # as asked: llama.cpp caps it
    assert (whole.offloaded, whole.total) == (25, 25)
    assert offload.plan_offload(0, None, "layer", 0, lambda: pytest.fail("no measure for -ngl 0")).offloaded == 0
    with pytest.raises(UsageError, match="-mg/--main-gpu: 1 is no offload device here"):
        offload.plan_offload(99, None, "none", 1, lambda: SIZE)
    monkeypatch.setattr(offload, "offload_devices", lambda names: [])
    assert offload.plan_offload(offload.AUTO, None, "layer", 0, lambda: pytest.fail("no GPU: no measure")).layers == 0
