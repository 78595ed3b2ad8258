"""Helpers for the server tests: start a real executable with --server on a free port (--port 0: the
server binds it and logs its URL, so there is no race for a port), wait until /health says it is
ready, and stop it with Ctrl-C (SIGINT) as a user would."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

URL_LINE = re.compile(r"server listening at (http://\S+/)")


class ServerProcess:
    def __init__(self, process: subprocess.Popen, url: str, log_path: Path) -> None:
        self.process = process
        self.url = url  # http://127.0.0.1:PORT/
        self.base_url = url + "v1"
        self.log_path = log_path

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metrics(self) -> dict[str, float]:
        """The unlabelled samples of /metrics, by name."""
        text = httpx.get(self.url + "metrics", timeout=10).text
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#") and "{" not in line:
                name, value = line.split()
                values[name] = float(value)
        return values

    def interrupt(self, timeout: float = 20) -> int:
        """Ctrl-C; returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise


def start_server(executable: Path, *args: str, log_path: Path, timeout: float = 90) -> ServerProcess:
    command = [str(executable), "--server", "--nobrowser", "--host", "127.0.0.1", "--port", "0", *args]
    with open(log_path, "wb") as log_file:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env={**os.environ, "DISPLAY": "", "WAYLAND_DISPLAY": ""})
    deadline = time.monotonic() + timeout
    url = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}: {log_path.read_text(errors='replace')}")
        if url is None:
            match = URL_LINE.search(log_path.read_text(errors="replace"))
            url = match.group(1) if match else None
        if url is not None:
            try:
                if httpx.get(url + "health", timeout=2).status_code == 200:
                    return ServerProcess(process, url, log_path)
            except httpx.TransportError:
                pass
        time.sleep(0.1)
    process.kill()
    raise AssertionError(f"server not ready after {timeout} s: {log_path.read_text(errors='replace')}")


# The web page's tests serve the tiny model with its own --grammar (letters and spaces, no end), so random
# weights write exactly -n 24 tokens of readable text.
PAGE_SERVER_ARGS = ("-n", "24", "-c", "512", "--grammar", "root ::= [a-z ] root")


@contextmanager
def running_server(executable: Path, *args: str, log_path: Path) -> Iterator[ServerProcess]:
    server = start_server(executable, *args, log_path=log_path)
    try:
        yield server
    finally:
        if server.process.poll() is None:
            server.interrupt()
