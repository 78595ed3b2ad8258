"""The CPU variants the runtime carries (ggml picks the best this CPU runs) hold up: the Sapphire Rapids
variant's AMX kernels configure their tiles from read-only data (build/patches/ggml-amx-tile-config.patch:
configured on the stack, GCC dropped the configuration and every AMX CPU died of SIGILL on its first
quantized matrix product). Checked in the machine code, so that a machine without AMX checks it too;
the Gemma and SmolLM2 tests run those kernels where the CPU has AMX."""

from __future__ import annotations

import importlib.util
import platform
import re
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(platform.machine() != "x86_64", reason="x86-64 CPU variants")


def wheel_variants() -> Path:
    spec = importlib.util.find_spec("llama_cpp")
    assert spec is not None and spec.submodule_search_locations
    return Path(list(spec.submodule_search_locations)[0]).parent / "bin"


def test_every_x86_variant_from_sse42_to_amx_is_there() -> None:
    names = {p.name for p in wheel_variants().glob("libggml-cpu-*.so")}
    assert {"libggml-cpu-sse42.so", "libggml-cpu-haswell.so", "libggml-cpu-skylakex.so",
            "libggml-cpu-sapphirerapids.so"} <= names, names


def test_the_amx_tile_configuration_is_loaded_from_read_only_data() -> None:
    code = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(wheel_variants() / "libggml-cpu-sapphirerapids.so")],
                          capture_output=True, text=True, check=True).stdout
    loads = re.findall(r"ldtilecfg\s+(\S+)", code)
    assert loads, "no AMX tile configuration in the Sapphire Rapids variant"
    assert all(operand.endswith("(%rip)") for operand in loads), loads  # not a stack slot (%rsp)
