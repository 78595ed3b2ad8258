"""`--server`: the OpenAI-compatible HTTP server (FastAPI on uvicorn).

`run()` listens first and loads the weights behind it (/health answers 503 until they are ready), then
serves until Ctrl-C. `start_background_server()` serves an engine that is already loaded on a
background thread: the default mode runs the terminal chat in the foreground and this beside it.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import webbrowser
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import messages
from ..formats.chat_template import ChatFormatter
from ..errors import UserError
from ..flags.settings import Settings
from ..bundle.payload_format import Payload
from .routes_vertex import port as vertex_port

if TYPE_CHECKING:  # the type only: importing the engine loads llama.cpp
    from ..engine.engine import Engine
    from ..plan import Plan

log = logging.getLogger(__name__)

# Streams still open at Ctrl-C are cancelled after this long, so stopping never hangs on a client.
GRACEFUL_SHUTDOWN_S = 3


def bind_socket(host: str, port: int) -> socket.socket:
    """The listening socket, bound here rather than by uvicorn so that a busy port or a bad address is
    our one-line error (uvicorn would log and sys.exit), and port 0 gets a free port we can report."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UserError(messages.SERVER_BAD_ADDRESS.format(host=host, reason=exc.strerror)) from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        if os.name != "nt":  # on Windows SO_REUSEADDR would let two servers share a port
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise UserError(messages.SERVER_CANNOT_LISTEN.format(host=host, port=port, reason=exc.strerror or exc)) from None
    sock.set_inheritable(True)
    return sock


def bind_sockets(hosts: str, port: int) -> list[socket.socket]:
    """One listening socket per address of --host (llama-server's takes a comma-separated list, e.g.
    127.0.0.1,::1); with port 0, the first one's free port for all. Raises UserError as bind_socket."""
    sockets: list[socket.socket] = []
    try:
        for host in [h.strip() for h in hosts.split(",") if h.strip()] or [hosts]:
            sockets.append(bind_socket(host, port))
            port = port or sockets[0].getsockname()[1]
    except UserError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def first_host(hosts: str) -> str:
    return next((h.strip() for h in hosts.split(",") if h.strip()), hosts)


def server_url(host: str, sock: socket.socket) -> str:
    port = sock.getsockname()[1]
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else "[::1]" if host == "::" else host
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/"


def tune_switch_interval() -> None:
    """A process-wide choice, so the server's start makes it, not the engine: the decoding thread takes
    the GIL back after every llama_decode, and with the event loop busy streaming, Python's default 5 ms
    switch interval stalled each batch step that long (8 streams went from 0.7x to 1.27x llama-server)."""
    sys.setswitchinterval(0.0005)


def _uvicorn_server(app, settings: Settings):
    tune_switch_interval()
    import uvicorn

    from .app import cancel_generations

    class Server(uvicorn.Server):
        async def shutdown(self, sockets=None) -> None:
            # Open streams would hold the graceful shutdown for its whole timeout, then be killed
            # mid-chunk: stop their generations first, so each ends with an error event saying the
            # server is shutting down, then [DONE].
            cancel_generations(app)
            await super().shutdown(sockets)

    config = uvicorn.Config(app, log_level="warning", access_log=settings.verbose, lifespan="off",
                            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, server_header=False,
                            log_config=None)
    return Server(config)


@dataclass
class BackgroundServer:
    """A server running on a background thread. `stop()` cancels its generations and waits for it."""

    url: str
    _server: object
    _thread: threading.Thread
    _app: object

    def stop(self, timeout: float = 10.0) -> None:
        from .app import cancel_all

        self._server.should_exit = True  # stop accepting first, then end what is running
        cancel_all(self._app, timeout)
        self._thread.join(timeout)


def start_background_server(plan: Plan, engine: Engine, formatter: ChatFormatter | None = None) -> BackgroundServer:
    """Serves `engine` (already loaded) at settings.host:settings.port on a daemon thread, and returns
    once it accepts connections. Raises UserError (one line) when the address cannot be used.
    `formatter`: the chat template compiled at start, shared with the terminal chat."""
    from .app import create_app
    from .state import EngineHolder

    settings = plan.settings
    sockets = bind_sockets(settings.host, vertex_port(settings.port))
    app = create_app(settings, EngineHolder.loaded(settings, engine, formatter, plan.names), plan.server_sampling)
    server = _uvicorn_server(app, settings)
    failure: list[BaseException] = []

    def serve() -> None:
        try:
            server.run(sockets=sockets)  # uvicorn installs no signal handlers off the main thread
        except BaseException as exc:  # noqa: BLE001 - reported by start_background_server
            failure.append(exc)
        finally:
            for sock in sockets:
                sock.close()

    thread = threading.Thread(target=serve, name="llmpack-server", daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        thread.join(0.02)
    if not server.started:
        raise UserError(messages.SERVER_CANNOT_LISTEN.format(
            host=settings.host, port=settings.port, reason=failure[0] if failure else "the server stopped"))
    return BackgroundServer(server_url(first_host(settings.host), sockets[0]), server, thread, app)


def run(plan: Plan, payload: Payload | None) -> int:
    from ..bundle.model_loader import load_engine
    from .app import cancel_all, create_app
    from .state import EngineHolder

    settings = plan.settings
    sockets = bind_sockets(settings.host, vertex_port(settings.port))
    holder = EngineHolder(settings, plan.names)
    app = create_app(settings, holder, plan.server_sampling)
    server = _uvicorn_server(app, settings)
    url = server_url(first_host(settings.host), sockets[0])

    def load() -> None:
        try:
            engine = load_engine(settings, payload, plan.engine)
            if plan.server_sampling.grammar:  # --grammar: refused at start, not on every request
                engine.check_grammar(plan.server_sampling.grammar)
            holder.set_engine(engine)  # compiles the chat template once: a broken one stops here
            if holder.formatter.fallback:
                log.warning(messages.TEMPLATE_FALLBACK_WARNING)
        except BaseException as exc:  # noqa: BLE001 - reported once the server has stopped
            holder.set_error(exc)
            server.should_exit = True
            return
        log.info(messages.SERVER_READY.format(url=url))
        if not settings.nobrowser:
            open_browser(url)

    # asyncio warns each time a stream writes to a client that just left; cancelling it is our job.
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    log.info(messages.SERVER_LISTENING.format(url=url))
    loader = threading.Thread(target=load, name="llmpack-load", daemon=True)
    loader.start()
    try:
        server.run(sockets=sockets)
    except KeyboardInterrupt:
        # uvicorn shuts down gracefully on Ctrl-C, then raises the signal again for its caller: for a
        # server, Ctrl-C is the normal way to stop, so this is a success.
        pass
    finally:
        stopped = cancel_all(app)
        for sock in sockets:
            sock.close()
    log.info(messages.SERVER_STOPPED)
    if holder.error is not None:
        raise holder.error
    if holder.engine is not None and stopped:  # else a generation thread still uses it; exit frees all
        holder.engine.close()
    return 0


def display_available() -> bool:
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def open_browser(url: str) -> bool:
    """Opens the web chat in a browser when there is a screen to show it on (never on a headless box)."""
    if not display_available():
        return False
    try:
        return webbrowser.open(url, new=2)
    except Exception:  # a browser that will not start is no reason to stop serving
        log.debug("could not open a browser", exc_info=True)
        return False
