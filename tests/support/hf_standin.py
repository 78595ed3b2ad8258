"""A stand-in for the Hugging Face hub on 127.0.0.1, for testing huggingface-hub's real download code
(pointed here with HF_ENDPOINT) without the network.

It answers what `hf_hub_download` asks (huggingface_hub 2.x, `file_download.py` and
`utils/_http.py: hf_raise_for_status`): HEAD and GET on `/{repo}/resolve/{revision}/{file}`, with
`X-Repo-Commit` (required, or the client decides this is not a hub), `ETag` (the cache's blob name),
`Content-Length` and byte ranges (used to resume); failures as the hub sends them: 404 with
`X-Error-Code: RepoNotFound`, `RevisionNotFound` or `EntryNotFound`, and 401 for a private or gated
repository asked for without its token (`RepoNotFound` or `GatedRepo`, as the hub does for anonymous
users). Every request is recorded, so tests can assert that a cached or offline build made none.
Anything else gets a plain 404: huggingface-hub also asks for `/api/agent-harnesses` (at most daily,
never offline) and treats any failure there as "no registry".
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


@dataclass
class Repo:
    folder: Path
    files: dict[str, str]  # name in the repository -> sha256 (the ETag the hub sends for LFS files)
    commit: str
    token: str | None = None  # private or gated: only this bearer token may read it
    gated: bool = False


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    authorization: str | None


@dataclass
class HubStandin:
    root: Path
    repos: dict[str, Repo] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)

    def add_repo(self, repo_id: str, files: dict[str, Path | bytes], *, token: str | None = None,
                 gated: bool = False) -> str:
        """Publishes `files` as `repo_id`'s main branch; returns its commit (40 hex digits, from the
        content, as a git commit id is)."""
        folder = self.root / repo_id
        folder.mkdir(parents=True)
        hashes = {}
        for name, content in files.items():
            target = folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                shutil.copyfile(content, target)
            hashes[name] = hashlib.sha256(target.read_bytes()).hexdigest()
        commit = hashlib.sha1(repr(sorted(hashes.items())).encode()).hexdigest()
        self.repos[repo_id] = Repo(folder, hashes, commit, token, gated)
        return commit

    def start(self) -> "HubStandin":
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects from the hub

            def do_HEAD(self) -> None:
                standin._answer(self, with_body=False)

            def do_GET(self) -> None:
                standin._answer(self, with_body=True)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def _answer(self, handler: BaseHTTPRequestHandler, with_body: bool) -> None:
        path = urlsplit(handler.path).path
        authorization = handler.headers.get("Authorization")
        self.requests.append(Request(handler.command, path, authorization))
        if path.startswith("/api/models/") and "/tree/" in path:
            return self._tree(handler, unquote(path[len("/api/models/"):].partition("/tree/")[0]), authorization)
        repo_id, sep, rest = path.lstrip("/").partition("/resolve/")
        revision, _, name = rest.partition("/")
        repo_id, revision, name = unquote(repo_id), unquote(revision), unquote(name)
        repo = self.repos.get(repo_id)
        if not sep or repo is None:
            return self._error(handler, 404, "RepoNotFound", "Repository not found", with_body)
        if repo.token is not None and authorization != f"Bearer {repo.token}":
            if repo.gated:
                return self._error(handler, 401, "GatedRepo", f"Access to model {repo_id} is restricted.", with_body)
            return self._error(handler, 401, "RepoNotFound", "Invalid username or password.", with_body)
        if revision not in ("main", repo.commit):
            return self._error(handler, 404, "RevisionNotFound", "Invalid rev id", with_body)
        if name not in repo.files:
            return self._error(handler, 404, "EntryNotFound", "Entry not found", with_body, repo.commit)
        self._send_file(handler, repo, name, with_body)

    def _tree(self, handler: BaseHTTPRequestHandler, repo_id: str, authorization: str | None) -> None:
        """The hub's file listing (huggingface-hub's list_repo_files), one page, every file."""
        repo = self.repos.get(repo_id)
        if repo is None or (repo.token is not None and authorization != f"Bearer {repo.token}"):
            return self._error(handler, 404, "RepoNotFound", "Repository not found", True)
        body = json.dumps([{"type": "file", "path": name, "oid": oid, "size": (repo.folder / name).stat().st_size}
                           for name, oid in sorted(repo.files.items())]).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _send_file(self, handler: BaseHTTPRequestHandler, repo: Repo, name: str, with_body: bool) -> None:
        data = (repo.folder / name).read_bytes()
        start, status = 0, 200
        ranged = handler.headers.get("Range", "")
        if ranged.startswith("bytes=") and ranged.endswith("-"):  # the only form the client sends
            start, status = int(ranged[len("bytes="):-1]), 206
        handler.send_response(status)
        handler.send_header("X-Repo-Commit", repo.commit)
        handler.send_header("ETag", f'"{repo.files[name]}"')
        handler.send_header("Accept-Ranges", "bytes")
        handler.send_header("Content-Type", "application/octet-stream")
        handler.send_header("Content-Length", str(len(data) - start))
        if status == 206:
            handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        handler.end_headers()
        if with_body:
            handler.wfile.write(data[start:])

    @staticmethod
    def _error(handler: BaseHTTPRequestHandler, status: int, code: str, message: str, with_body: bool,
               commit: str | None = None) -> None:
        body = f'{{"error": "{message}"}}'.encode()
        handler.send_response(status)
        handler.send_header("X-Error-Code", code)
        handler.send_header("X-Error-Message", message)
        if commit:
            handler.send_header("X-Repo-Commit", commit)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if with_body:
            handler.wfile.write(body)
