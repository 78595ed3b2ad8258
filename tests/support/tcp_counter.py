"""A TCP relay that counts the bytes each way: put between a client and a server on 127.0.0.1, it
measures what goes over the wire (ggml-rpc's send()/recv() are not counted in /proc/PID/io)."""

from __future__ import annotations

import socket
import threading


class CountingRelay:
    """Listens on a free port of 127.0.0.1 and relays every connection to `target` (HOST, PORT)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.sent = 0  # client -> server, over all connections
        self.received = 0  # server -> client
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def reset(self) -> None:
        with self._lock:
            self.sent = self.received = 0

    def close(self) -> None:
        self._closed = True
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            for source, sink, field in ((client, server, "sent"), (server, client, "received")):
                threading.Thread(target=self._pump, args=(source, sink, field), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, field: str) -> None:
        try:
            while data := source.recv(1 << 20):
                sink.sendall(data)
                with self._lock:
                    setattr(self, field, getattr(self, field) + len(data))
        except OSError:
            pass
        finally:
            for end in (source, sink):  # one side closed: close both, as a direct connection would be
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                end.close()
