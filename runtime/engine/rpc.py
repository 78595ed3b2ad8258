"""llama.cpp's RPC backend (ggml-rpc): --rpc's workers as devices of this process, and --rpc-server's
blocking serve call.

ggml-rpc has no error path: a worker that cannot be reached, or is lost mid-way, is GGML_ABORT, i.e.
abort() of the whole process, on ggml-rpc's own dispatcher thread. ggml calls an abort callback first,
and abort() only once that returns; ours does not return when the cause is a lost worker:
- a process that serves others (--server: `on_lost_worker` set) fails every request at hand and later
  ones, reports unhealthy, and parks the dispatcher thread for good (the decoding thread then waits on it
  forever, which is why nothing may wait for that thread: see Scheduler.fail and Engine.close);
- anything else (--cli, the chat, a worker lost while the weights load) prints one line and exits 1.
Any other abort is left to ggml, as before.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import threading
import time
from typing import Callable, Sequence

from .. import messages
from ..errors import EngineFailure, UserError, error_line
from ..rpc.client import check_reachable, refusing, unreachable
from .devices import GPU, Device, all_devices, ggml
from .native import load_backends
from .native_libs import ABORT_CALLBACK

log = logging.getLogger(__name__)

_ADD_SERVER_TYPE = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_char_p)
_START_SERVER_TYPE = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_size_t,
                                      ctypes.POINTER(ctypes.c_void_p))
# How long the abort handler waits for each worker before calling it lost, and how often it asks.
PROBE_TIMEOUT_S = 2.0
PROBE_ATTEMPTS = 4
PROBE_INTERVAL_S = 0.25
# How often a serving process checks that its workers still listen.
WATCH_INTERVAL_S = 3.0


class _Workers:
    """The process's RPC workers and what a lost one does (process-wide, as ggml's abort callback is)."""

    endpoints: tuple[str, ...] = ()
    devices: list[Device] = []
    on_lost: Callable[[str], None] | None = None
    callback = None  # the ctypes callback, kept referenced while ggml holds it
    watcher: threading.Thread | None = None
    reported = False
    lock = threading.Lock()


def _rpc_procedure(name: str, kind):
    load_backends()  # libggml-rpc is one of them
    lib = ggml()
    reg = lib.ggml_backend_reg_by_name(b"RPC")  # libggml-rpc, loaded with the other backends
    address = lib.ggml_backend_reg_get_proc_address(reg, name.encode()) if reg else None
    if not address:
        raise EngineFailure(messages.RPC_NOT_BUILT)
    return kind(address)


def rpc_available() -> bool:
    try:
        _rpc_procedure("ggml_backend_rpc_add_server", _ADD_SERVER_TYPE)
    except UserError:
        return False
    return True


def connect_workers(endpoints: Sequence[str]) -> list[Device]:
    """Makes each worker's devices devices of this process (llama.cpp's add_rpc_devices), once; returns
    them. Raises UserError naming a worker that does not answer."""
    if _Workers.endpoints:
        return _Workers.devices
    add_server = _rpc_procedure("ggml_backend_rpc_add_server", _ADD_SERVER_TYPE)
    check_reachable(endpoints)
    _Workers.endpoints = tuple(endpoints)
    _install_abort_handler()
    lib = ggml()
    for endpoint in endpoints:
        reg = add_server(endpoint.encode())
        if not reg:
            raise EngineFailure(messages.RPC_WORKER_NO_DEVICES.format(endpoint=endpoint))
        lib.ggml_backend_register(reg)
    _Workers.devices = [d for d in all_devices() if d.kind == GPU and d.description in endpoints]
    log.info(messages.RPC_DEVICES.format(devices=", ".join(d.describe() for d in _Workers.devices)))
    return _Workers.devices


def on_lost_worker(handler: Callable[[str], None] | None) -> None:
    """`handler(message)` runs (on ggml-rpc's thread) when a worker is lost; None: exit with one line.
    With a handler, a watcher also notices a worker that dies while nothing is being computed (ggml-rpc
    would only notice at the next request), so that /health says so at once."""
    _Workers.on_lost = handler
    if handler is not None and _Workers.watcher is None:
        _Workers.watcher = threading.Thread(target=_watch, name="llmpack-rpc-watch", daemon=True)
        _Workers.watcher.start()


def _watch() -> None:
    while True:
        time.sleep(WATCH_INTERVAL_S)
        refused = refusing(_Workers.endpoints, PROBE_TIMEOUT_S)
        if refused:
            _report(messages.RPC_WORKER_LOST.format(endpoints=", ".join(refused)))
            return


def _report(text: str) -> None:
    """Tells the handler once, whichever of the abort handler and the watcher notices first."""
    with _Workers.lock:
        if _Workers.on_lost is not None and not _Workers.reported:
            _Workers.reported = True
            log.error("%s", text)
            _Workers.on_lost(text)


def _install_abort_handler() -> None:
    _Workers.callback = ABORT_CALLBACK(_on_abort)
    ggml().ggml_set_abort_callback(_Workers.callback)


def _on_abort(native_message: bytes | None) -> None:
    lost = _lost_workers()
    if not lost:  # not ours: ggml's own report, then its abort()
        sys.stderr.write((native_message or b"").decode("utf-8", "replace") + "\n")
        sys.stderr.flush()
        return
    text = messages.RPC_WORKER_LOST.format(endpoints=", ".join(lost))
    if _Workers.on_lost is None:
        with _Workers.lock:  # two workers lost at once: one line
            try:
                sys.stdout.flush()  # the text generated so far, then the reason it stops
            except (OSError, ValueError):
                pass
            sys.stderr.write(error_line(text) + "\n")
            sys.stderr.flush()
            os._exit(1)
    _report(text)
    threading.Event().wait()  # for good: returning would let ggml abort() the process


def _lost_workers() -> list[str]:
    """The workers that no longer accept a connection. Asked a few times: a worker that is dying has
    already dropped our connection but may, for a moment, still have its listening socket."""
    for _ in range(PROBE_ATTEMPTS):
        lost = [endpoint for endpoint, _ in unreachable(_Workers.endpoints, PROBE_TIMEOUT_S)]
        if lost:
            return lost
        time.sleep(PROBE_INTERVAL_S)
    return []


def serve_worker(endpoint: str, cache_dir: str | None, n_threads: int, devices: Sequence[Device]) -> None:
    """ggml_backend_rpc_start_server: serves one client at a time until the process ends. Returns only
    when it could not start (e.g. the address cannot be bound)."""
    start = _rpc_procedure("ggml_backend_rpc_start_server", _START_SERVER_TYPE)
    handles = (ctypes.c_void_p * len(devices))(*(d.handle for d in devices))
    start(endpoint.encode(), os.fsencode(cache_dir) if cache_dir else None, n_threads, len(devices), handles)
