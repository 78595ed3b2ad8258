"""A small MCP server for the web page's tests (streamable HTTP): one tool, `add`, a session given at
initialize and required after it, tools/call answered as an SSE stream; with or without CORS for the page
(without: only the server's /cors-proxy, --ui-mcp-proxy, can reach it from the page)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ADD = {"name": "add", "description": "Adds two numbers",
       "inputSchema": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                       "required": ["a", "b"]}}
CORS = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": "POST, GET, DELETE, OPTIONS",
        "Access-Control-Allow-Headers": "content-type, accept, authorization, mcp-session-id, mcp-protocol-version",
        "Access-Control-Expose-Headers": "Mcp-Session-Id"}


class McpHandler(BaseHTTPRequestHandler):
    """One tool, `add`; every request after initialize must carry the session it was given."""

    calls: list[dict]
    cors: dict[str, str] = CORS

    def log_message(self, *args) -> None:
        pass

    def _send(self, status: int, body: bytes = b"", kind: str = "application/json", **headers: str) -> None:
        self.send_response(status)
        for name, value in {**self.cors, **headers}.items():
            self.send_header(name, value)
        if body:
            self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_OPTIONS(self) -> None:  # noqa: N802 - http.server's name
        self._send(204)

    def do_POST(self) -> None:  # noqa: N802
        message = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.calls.append({"method": message["method"], "params": message.get("params"),
                           "session": self.headers.get("Mcp-Session-Id"),
                           "protocol": self.headers.get("MCP-Protocol-Version"),
                           "authorization": self.headers.get("Authorization")})
        method, answer = message["method"], None
        if method != "initialize" and self.headers.get("Mcp-Session-Id") != "session-1":
            self._send(400, b'{"error": "no session"}')
        elif method == "initialize":
            answer = {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                      "serverInfo": {"name": "test", "version": "1"}}
            self._send(200, json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": answer}).encode(),
                       **{"Mcp-Session-Id": "session-1"})
        elif method.startswith("notifications/"):
            self._send(202)
        elif method == "tools/list":
            self._send(200, json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": {"tools": [ADD]}}).encode())
        elif method == "tools/call":
            args = message["params"]["arguments"]
            result = {"content": [{"type": "text", "text": str(args["a"] + args["b"])}], "isError": False}
            event = json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": result})
            self._send(200, f"event: message\ndata: {event}\n\n".encode(), "text/event-stream")


@contextmanager
def running_mcp_server(cors: bool = True) -> Iterator[tuple[str, list[dict]]]:
    """(its URL, the calls it received)."""
    calls: list[dict] = []
    handler = type("Handler", (McpHandler,), {"calls": calls, "cors": CORS if cors else {}})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/mcp", calls
    finally:
        httpd.shutdown()
        httpd.server_close()
