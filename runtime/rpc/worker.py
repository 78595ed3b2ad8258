"""`--rpc-server`: this executable as a llama.cpp RPC worker (as llama.cpp's rpc-server), a device for
another machine's `--rpc`. The embedded weights are not loaded: the main process sends the layers it
offloads here.

ggml-rpc's serve call blocks for good and answers no signal, so it runs on a daemon thread and the main
thread waits for Ctrl-C or SIGTERM: either stops the worker at once. Its tensor cache (on unless
--no-rpc-cache) keeps each large weight received, by hash, so the next start receives only the hashes.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
from pathlib import Path

from .. import messages
from ..errors import UsageError, UserError
from ..bundle.payload_format import Payload
from ..plan import Plan
from ..bundle.user_cache import cache_root

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    return cache_root() / "rpc"


def run(plan: Plan, payload: Payload | None) -> int:
    from ..engine import devices, rpc
    from ..flags.values import device_names

    settings = plan.settings
    endpoint = f"{settings.host}:{settings.port}"
    if not rpc.rpc_available():
        raise UserError(messages.RPC_NOT_BUILT)
    served = devices.worker_devices(device_names(settings.device) if settings.device else None)
    cache = None if settings.no_rpc_cache else _cache_dir(settings.rpc_cache)
    _check_address(settings.host, settings.port, endpoint)
    if not settings.verbose:
        _silence_stdout()  # ggml-rpc prints its banner and every connection there; stdout carries no results
    log.warning(messages.RPC_WORKER_LISTENING.format(
        endpoint=endpoint, devices=", ".join(d.name for d in served), threads=settings.thread_count(),
        cache=cache or "off"))
    worker = threading.Thread(target=rpc.serve_worker, name="llmpack-rpc-worker", daemon=True,
                              args=(endpoint, cache, settings.thread_count(), served))
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    worker.start()
    try:
        while worker.is_alive() and not stop.is_set():
            stop.wait(0.2)
    except KeyboardInterrupt:
        stop.set()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not stop.is_set():  # the serve call returned: it could not start
        raise UserError(messages.RPC_WORKER_CANNOT_LISTEN.format(endpoint=endpoint, reason="ggml-rpc could not serve"))
    log.info(messages.RPC_WORKER_STOPPED)
    # Now, not through the interpreter's shutdown: the serve thread may be computing inside ggml, and
    # finalizing Python and the C++ statics under it could crash the exit.
    logging.shutdown()
    os._exit(0)


def _cache_dir(chosen: str | None) -> str:
    path = Path(chosen) if chosen else default_cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(messages.RPC_CACHE_UNUSABLE.format(path=path, reason=exc.strerror or exc)) from None
    if not os.access(path, os.W_OK):
        raise UserError(messages.RPC_CACHE_UNUSABLE.format(path=path, reason="not writable"))
    return str(path)


def _check_address(host: str, port: int, endpoint: str) -> None:
    """Binds the address once here: ggml-rpc only prints "Failed to create server socket", with no
    reason. It binds IPv4 addresses only, given as numbers (inet_addr: no host names)."""
    try:
        socket.inet_aton(host)
    except OSError:
        raise UsageError(messages.RPC_WORKER_HOST.format(host=host)) from None
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as ggml-rpc binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise UserError(messages.RPC_WORKER_CANNOT_LISTEN.format(
                endpoint=endpoint, reason=exc.strerror or exc)) from None


def _silence_stdout() -> None:
    sys.stdout.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
