"""`--list-devices`: the devices ggml found, as llama.cpp's --list-devices prints them (the offload
devices: GPUs and --rpc workers, with their memory), then exits. A GPU backend this file carries that
found nothing says why on stderr (no driver, no device), so the user knows what to install."""

from __future__ import annotations

import sys

from .. import messages
from ..plan import Plan
from ..bundle.payload_format import Payload


def run(plan: Plan, payload: Payload | None) -> int:
    from ..engine.devices import CPU, all_devices
    from ..engine.native_libs import gpu_status

    print(messages.LIST_DEVICES_HEADER)
    for device in all_devices():
        if device.kind != CPU:
            print(f"  {device.name}: {device.description} ({device.total >> 20} MiB, {device.free >> 20} MiB free)")
    for line in gpu_status():
        if "(not loaded" in line or "(no device" in line:
            print(f"llmpack: {line}", file=sys.stderr)
    return 0
