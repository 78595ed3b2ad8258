"""Whether --rpc's workers answer, asked without llama.cpp.

ggml-rpc aborts the whole process when it cannot connect to a worker, when the worker speaks another
protocol version, or when it loses one mid-way; and it waits forever for a worker busy with another
client (a worker serves one at a time). So every worker is asked here before the weights load, with
ggml-rpc's own handshake (HELLO) and a timeout: one line naming a worker that does not answer, exit 1.
The abort handler (runtime/engine/rpc.py) asks again, with a plain connection (a worker that serves us is
busy), to tell a lost worker from any other abort.
"""

from __future__ import annotations

import socket
import struct
from typing import Sequence

from .. import messages
from ..errors import UserError

# Long enough for a worker across a busy LAN; a worker that is down on a reachable host refuses at once.
CONNECT_TIMEOUT_S = 3.0
# ggml-rpc's handshake (ggml-rpc.cpp): command 14 (RPC_CMD_HELLO, fixed in every version), the request's
# size and the client's transport capabilities (24 bytes; none here); the answer: size, then the
# worker's protocol version (major, minor, patch) and its capabilities.
HELLO = 14
CAPS_SIZE = 24
# The protocol of the ggml-rpc this runtime ships (ggml-rpc.h RPC_PROTO_MAJOR/MINOR_VERSION): a worker
# must have the same major and no newer minor. tests/test_rpc.py fails when an upgrade changes it.
PROTOCOL = (7, 0)


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


def refusing(endpoints: Sequence[str], timeout: float = CONNECT_TIMEOUT_S) -> list[str]:
    """The workers whose port refuses a connection: nothing listens there any more. (A worker busy with
    this process may not take a probe in time; a timeout is no proof, a refusal is.)"""
    refused = []
    for endpoint in endpoints:
        host, _, port = endpoint.partition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=timeout):
                pass
        except ConnectionRefusedError:
            refused.append(endpoint)
        except OSError:
            continue
    return refused


def check_reachable(endpoints: Sequence[str]) -> None:
    """Raises UserError naming the first worker that does not answer, is busy or speaks another version."""
    for endpoint in endpoints:
        host, _, port = endpoint.partition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S) as sock:
                version = _hello(sock)
        except socket.timeout:
            raise UserError(messages.RPC_WORKER_BUSY.format(endpoint=endpoint)) from None
        except OSError as exc:
            raise UserError(messages.RPC_WORKER_UNREACHABLE.format(endpoint=endpoint, reason=_reason(exc))) from None
        if version is None or version[0] != PROTOCOL[0] or version[1] > PROTOCOL[1]:
            raise UserError(messages.RPC_WORKER_VERSION.format(
                endpoint=endpoint, version="another" if version is None else ".".join(map(str, version)),
                ours=".".join(map(str, PROTOCOL))))


def _hello(sock: socket.socket) -> tuple[int, int, int] | None:
    """The worker's protocol version, or None when it closed the connection at the handshake (a
    version whose request has another size). The worker then ends this client and awaits the next."""
    sock.sendall(bytes([HELLO]) + struct.pack("<Q", CAPS_SIZE) + bytes(CAPS_SIZE))
    header = _receive(sock, 8)
    if header is None:
        return None
    size = struct.unpack("<Q", header)[0]
    if size > 1024:  # not a HELLO answer: no RPC worker
        return None
    body = _receive(sock, size)
    return (body[0], body[1], body[2]) if body is not None and len(body) >= 3 else None


def _receive(sock: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = sock.recv(min(size - len(data), 1 << 16))
        if not chunk:
            return None
        data += chunk
    return data


def _reason(exc: OSError) -> str:
    if isinstance(exc, socket.timeout):
        return "no answer"
    if isinstance(exc, socket.gaierror):
        return f"unknown host: {exc.strerror}"
    return (exc.strerror or str(exc)).lower()
