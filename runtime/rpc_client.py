"""Whether --rpc's workers answer, asked with a plain TCP connection (no llama.cpp).

ggml-rpc aborts the whole process when it cannot connect to a worker, or loses one mid-way. So every
worker is tried here before the weights load (an unreachable one is one line naming it, exit 1), and the
abort handler (runtime/engine/native.py) asks again to tell a lost worker from any other abort.
"""

from __future__ import annotations

import socket
from typing import Sequence

from . import messages
from .errors import UserError

# Long enough for a worker across a busy LAN; a worker that is down on a reachable host refuses at once.
CONNECT_TIMEOUT_S = 3.0


def unreachable(endpoints: Sequence[str], timeout: float = CONNECT_TIMEOUT_S) -> list[tuple[str, str]]:
    """(endpoint, reason) for each worker that does not accept a connection. A worker serving another
    client still accepts one into its backlog, so a busy worker counts as reachable."""
    failed = []
    for endpoint in endpoints:
        host, _, port = endpoint.partition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=timeout):
                pass
        except OSError as exc:
            failed.append((endpoint, _reason(exc)))
    return failed


def check_reachable(endpoints: Sequence[str]) -> None:
    """Raises UserError naming the first worker that does not answer."""
    failed = unreachable(endpoints)
    if failed:
        endpoint, reason = failed[0]
        raise UserError(messages.RPC_WORKER_UNREACHABLE.format(endpoint=endpoint, reason=reason))


def _reason(exc: OSError) -> str:
    if isinstance(exc, socket.timeout):
        return "no answer"
    if isinstance(exc, socket.gaierror):
        return f"unknown host: {exc.strerror}"
    return (exc.strerror or str(exc)).lower()
