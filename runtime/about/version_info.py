"""`--version`: llmpack's version, llama.cpp's (ggml's version and the commit it was built from, and the
llama-cpp-python release that vendors it), the compute backends found, and the embedded model.

Unlike --help this loads ggml: the backends found are only known once it has looked. ggml alone, not
llama-cpp-python's bindings or libllama (runtime/engine/native_libs.py). A runtime whose native library
cannot load still answers, saying why, so --version stays usable to report it.
"""

from __future__ import annotations

import sys

from .. import __version__
from ..bundle.payload_format import Payload


def version_lines(payload: Payload | None) -> list[str]:
    lines = [f"llmpack {__version__}"]
    try:
        from ..engine import native_libs as native

        native.route_ggml_logs(4)  # llama.cpp's errors only: stdout is the answer, stderr stays quiet
        lines.append(f"llama.cpp: {_llama_cpp_version(native, payload)}")
        gpu = "".join(f"; {status}" for status in native.gpu_status())  # each GPU backend carried, and what it found
        devices = native.load_backends()
        variant = native.cpu_variant()  # which of the CPU variants ggml picked for this CPU
        devices = [f"CPU ({variant})" if d == "CPU" and variant else d for d in devices]
        lines.append(f"backends: {', '.join(devices) or 'none found'}{gpu}{_rpc_backend(native)}")
    except Exception as exc:  # a broken native library is what a user runs --version to report
        lines.append(f"llama.cpp: cannot be loaded ({type(exc).__name__}: {exc})")
    lines.append(f"model: {describe_model(payload)}")
    return lines


def _rpc_backend(native) -> str:
    """ggml-rpc has no device until --rpc names workers, so it is said apart: whether --rpc and
    --rpc-server can work in this build."""
    ggml = native.open_ggml()
    function = getattr(ggml, "ggml_backend_reg_by_name", None) if ggml is not None else None
    if function is None:
        return ""
    return "; RPC (--rpc, --rpc-server)" if function(b"RPC") else ""


def _llama_cpp_version(native, payload: Payload | None) -> str:
    parts = []
    ggml = native.open_ggml()  # the libggml libllama loaded: its version and commit are compiled in
    for name, label in (("ggml_version", "ggml"), ("ggml_commit", "commit")):
        function = getattr(ggml, name, None) if ggml is not None else None
        if function is not None:
            value = (function() or b"").decode("utf-8", "replace")
            if value and value != "unknown":
                parts.append(f"{label} {value}")
    bindings = _bindings_version(payload)
    if bindings:
        parts.append(f"llama-cpp-python {bindings}")
    return ", ".join(parts) or "version unknown"


def _bindings_version(payload: Payload | None) -> str | None:
    """The executable's manifest records what its runtime was frozen with: read first there, as
    importlib.metadata costs ~20 ms of imports (email, zipfile, csv...) at every --version."""
    recorded = payload.manifest.get("runtime", {}).get("llama_cpp_python") if payload is not None else None
    if recorded and getattr(sys, "frozen", False):
        return str(recorded)
    import importlib.metadata

    try:
        return importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        return str(recorded) if recorded else None


def describe_model(payload: Payload | None) -> str:
    if payload is None:
        return "none embedded (-m FILE.gguf gives one)"
    model = payload.manifest.get("model", {})
    details = [str(model.get("file") or ""), _size(payload.gguf_length), str(model.get("quantization") or ""),
               str(model.get("architecture") or "")]
    where = " beside this file" if payload.path != payload.executable else ""
    return f"{model.get('name', '?')} ({', '.join(d for d in details if d)}){where}"


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} bytes"
