"""OpenAI's `system_fingerprint`: which backend produced an answer, "llmpack-<version>-<llama.cpp commit>",
so a client can tell that a change in outputs came from a change of runtime."""

from __future__ import annotations

import functools

from .. import __version__


@functools.cache
def system_fingerprint() -> str:
    """Asked for only once a model is loaded: llama.cpp's library is then in the process already, and
    only ggml's compiled-in commit is read from it (importing the server alone loads nothing)."""
    commit = ""
    try:
        from ..engine import native

        ggml = native.open_ggml()
        function = getattr(ggml, "ggml_commit", None) if ggml is not None else None
        if function is not None:
            commit = (function() or b"").decode("ascii", "replace").strip()
    except Exception:  # noqa: BLE001 - a fingerprint without the commit is still a fingerprint
        commit = ""
    if not commit or commit == "unknown":
        return f"llmpack-{__version__}"
    return f"llmpack-{__version__}-{commit[:7]}"
