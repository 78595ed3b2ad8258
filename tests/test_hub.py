"""`llmpack build --hf-repo/--hf-file`: huggingface-hub's real download code against a stand-in hub on
127.0.0.1 (HF_ENDPOINT) and a cache in tmp (HF_HOME); split GGUFs, local and from the hub."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest
from llmpack.bundler import messages
from llmpack.bundler.build_command import resolve_weights
from llmpack.bundler.gguf_info import read_gguf_info
from llmpack.bundler.gguf_split import split_parts
from llmpack.bundler.options import BuildOptions
from support.commands import (
    LLMPACK,
    build_bundle,
    error_line,
    llmpack,
    one_error_line,
    run,
)
from support.hf_standin import HubStandin
from support.tiny_model import write_tiny_gguf

REPO, PRIVATE, GATED, TOKEN = "owner/tiny-GGUF", "owner/private-GGUF", "owner/gated-GGUF", "hf_standin_token"
PROMPT = ["--cli", "-p", "hi", "-n", "4", "--temp", "0", "--log-disable"]


@pytest.fixture(scope="module")
def split_gguf(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The session's tiny model (same seed) split in 3 parts by gguf-py, as gguf-split names them."""
    return split_parts(write_tiny_gguf(tmp_path_factory.mktemp("split") / "tiny.gguf", split_max_tensors=8))


@pytest.fixture(scope="module")
def hub(tiny_gguf: Path, split_gguf: list[Path], tmp_path_factory: pytest.TempPathFactory):
    standin = HubStandin(tmp_path_factory.mktemp("hub"))
    standin.add_repo(REPO, {"tiny.gguf": tiny_gguf, **{p.name: p for p in split_gguf}})
    standin.add_repo(PRIVATE, {"tiny.gguf": tiny_gguf}, token=TOKEN)
    standin.add_repo(GATED, {"tiny.gguf": tiny_gguf}, token=TOKEN, gated=True)
    yield standin.start()
    standin.stop()


@pytest.fixture(scope="module")
def hub_env(hub: HubStandin, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One huggingface-hub cache for the module (the offline test reads what the online build fetched),
    and none of the developer's own hub settings."""
    return {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path_factory.mktemp("hf-home")), "HF_TOKEN": "",
            "HF_HUB_OFFLINE": "0"}


@pytest.fixture(scope="module")
def commit(hub: HubStandin) -> str:
    return hub.repos[REPO].commit


def hub_build(hub_env: dict[str, str], *args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    return llmpack("build", *args, env={**hub_env, **env}, cwd=cwd)


def resolve_requests(hub: HubStandin, since: int = 0) -> list[tuple[str, str]]:
    """The download requests (huggingface-hub also asks the hub for its agent registry once a day)."""
    return [(r.method, r.path) for r in hub.requests[since:] if "/resolve/" in r.path]


def inspect(bundle: Path) -> dict:
    result = llmpack("inspect", "--json", str(bundle))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def expected_completion(tiny_bundle: Path) -> str:
    result = run([str(tiny_bundle), *PROMPT])
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def hub_build_once(hub: HubStandin, hub_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[str, str]]]:
    """A build from the hub into an empty cache: the executable, and the requests it made."""
    output = tmp_path_factory.mktemp("from-hub") / "x.llmpack"
    before = len(hub.requests)
    result = hub_build(hub_env, "--hf-repo", REPO, "--hf-file", "tiny.gguf", "-o", str(output))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(output)
    return output, resolve_requests(hub, before)


@pytest.fixture(scope="module")
def hub_bundle(hub_build_once: tuple[Path, list[tuple[str, str]]]) -> Path:
    return hub_build_once[0]


@pytest.mark.slow
def test_build_from_the_hub(hub: HubStandin, commit: str, hub_build_once: tuple[Path, list[tuple[str, str]]],
                            tiny_bundle: Path, expected_completion: str) -> None:
    hub_bundle, requests = hub_build_once
    assert requests == [("HEAD", f"/{REPO}/resolve/main/tiny.gguf"), ("GET", f"/{REPO}/resolve/main/tiny.gguf")]
    result = run([str(hub_bundle), *PROMPT])
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected_completion
    document = inspect(hub_bundle)
    assert document["manifest"]["model"]["source"] == {
        "type": "huggingface", "repo": REPO, "file": "tiny.gguf", "revision": commit, "endpoint": hub.url}
    assert document["gguf_sha256"] == inspect(tiny_bundle)["gguf_sha256"]


@pytest.mark.slow
def test_offline_build_uses_the_cache(hub: HubStandin, hub_env: dict[str, str], hub_bundle: Path, tmp_path: Path) -> None:
    before = len(hub.requests)
    result = hub_build(hub_env, "--hf-repo", REPO, "--hf-file", "tiny.gguf", "-o", str(tmp_path / "y.llmpack"),
                       HF_HUB_OFFLINE="1")
    assert result.returncode == 0, result.stderr
    assert hub.requests[before:] == []
    offline, online = inspect(tmp_path / "y.llmpack"), inspect(hub_bundle)
    assert offline["gguf_sha256"] == online["gguf_sha256"]
    assert offline["manifest"]["model"]["source"] == online["manifest"]["model"]["source"]


def test_offline_and_not_cached(hub: HubStandin, hub_env: dict[str, str], tmp_path: Path) -> None:
    before = len(hub.requests)
    result = hub_build(hub_env, "--hf-repo", REPO, "--hf-file", "tiny-00001-of-00003.gguf",
                       "-o", str(tmp_path / "x.llmpack"), HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "empty-hf"))
    assert one_error_line(result) == error_line(messages.HF_OFFLINE_NOT_CACHED.format(
        file="tiny-00001-of-00003.gguf", repo=REPO, cache=tmp_path / "empty-hf" / "hub"))
    assert hub.requests[before:] == []
    assert list(tmp_path.iterdir()) == []


FAILURES = {
    "no such repository": ((["--hf-repo", "owner/absent-GGUF", "--hf-file", "tiny.gguf"], {}),
                           lambda hub: messages.HF_REPO_NOT_FOUND.format(repo="owner/absent-GGUF", endpoint=hub.url)),
    "no such file": ((["--hf-repo", REPO, "--hf-file", "absent.gguf"], {}),
                     lambda hub: messages.HF_FILE_NOT_FOUND.format(repo=REPO, file="absent.gguf", revision="main")),
    "no such revision": ((["--hf-repo", REPO, "--hf-file", "tiny.gguf", "--revision", "v9"], {}),
                         lambda hub: messages.HF_REVISION_NOT_FOUND.format(repo=REPO, revision="v9")),
    "private, no token": ((["--hf-repo", PRIVATE, "--hf-file", "tiny.gguf"], {}),
                          lambda hub: messages.HF_NEEDS_TOKEN.format(endpoint=hub.url, repo=PRIVATE, status=401)),
    "private, wrong token": ((["--hf-repo", PRIVATE, "--hf-file", "tiny.gguf"], {"HF_TOKEN": "hf_wrong"}),
                             lambda hub: messages.HF_TOKEN_REFUSED.format(endpoint=hub.url, repo=PRIVATE, status=401)),
    "gated": ((["--hf-repo", GATED, "--hf-file", "tiny.gguf"], {}),
              lambda hub: messages.HF_GATED.format(endpoint=hub.url, repo=GATED)),
    "bad repository id": ((["--hf-repo", "owner/tiny GGUF!", "--hf-file", "tiny.gguf"], {}),
                          lambda hub: messages.HF_BAD_REPO.format(repo="owner/tiny GGUF!")),
    "file outside the repository": ((["--hf-repo", REPO, "--hf-file", "../tiny.gguf"], {}),
                                    lambda hub: messages.HF_BAD_FILE.format(file="../tiny.gguf")),
    "a later part": ((["--hf-repo", REPO, "--hf-file", "tiny-00002-of-00003.gguf"], {}),
                     lambda hub: messages.SPLIT_NOT_FIRST.format(path="tiny-00002-of-00003.gguf", no=2, count=3,
                                                                 first="tiny-00001-of-00003.gguf")),
    "hub and a path": ((["tiny.gguf", "--hf-repo", REPO, "--hf-file", "tiny.gguf"], {}),
                       lambda hub: messages.WEIGHTS_SOURCE),
}


@pytest.mark.parametrize("case", FAILURES)
def test_hub_failures_are_one_line(case: str, hub: HubStandin, hub_env: dict[str, str], tmp_path: Path) -> None:
    (args, env), expected = FAILURES[case]
    result = hub_build(hub_env, *args, "-o", str(tmp_path / "x.llmpack"), **env)
    assert one_error_line(result) == error_line(expected(hub))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_private_repository_with_its_token(hub: HubStandin, hub_env: dict[str, str], tmp_path: Path) -> None:
    before = len(hub.requests)
    result = hub_build(hub_env, "--hf-repo", PRIVATE, "--hf-file", "tiny.gguf", cwd=tmp_path, HF_TOKEN=TOKEN)
    assert result.returncode == 0, result.stderr
    assert {r.authorization for r in hub.requests[before:] if "/resolve/" in r.path} == {f"Bearer {TOKEN}"}
    # Without -o, in the current folder (the GGUF's own folder is huggingface-hub's cache).
    assert result.stdout.strip() == "tiny.llmpack" and list(tmp_path.iterdir()) == [tmp_path / "tiny.llmpack"]
    assert inspect(tmp_path / "tiny.llmpack")["manifest"]["model"]["source"]["repo"] == PRIVATE


@pytest.mark.slow
def test_unreachable_hub(hub_env: dict[str, str], tmp_path: Path) -> None:
    """Nothing listens on the port: huggingface-hub retries with back-off (about 25 s), then one line."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    result = hub_build(hub_env, "--hf-repo", REPO, "--hf-file", "tiny.gguf", "-o", str(tmp_path / "x.llmpack"),
                       HF_ENDPOINT=closed, HF_HOME=str(tmp_path / "hf"))
    assert one_error_line(result) == error_line(messages.HF_UNREACHABLE.format(
        endpoint=closed, reason="no connection", file="tiny.gguf", repo=REPO))
    assert not (tmp_path / "x.llmpack").exists()


@pytest.mark.slow
def test_split_gguf_from_a_local_path(split_gguf: list[Path], tiny_gguf: Path, tmp_path: Path,
                                      expected_completion: str) -> None:
    output = build_bundle(split_gguf[0], tmp_path / "split.llmpack")
    assert list(tmp_path.iterdir()) == [output]  # the merged temporary GGUF is gone
    result = run([str(output), *PROMPT])
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected_completion
    source = inspect(output)["manifest"]["model"]["source"]
    assert source == {"type": "file", "file": "tiny-00001-of-00003.gguf", "parts": 3}
    unpacked = tmp_path / "unpacked.gguf"
    assert llmpack("unpack", str(output), "-o", str(unpacked)).returncode == 0
    info = read_gguf_info(str(unpacked))  # one standard GGUF: no split keys, every tensor
    assert len(info.tensors) == 21 and not any(key.startswith("split.") for key in info.metadata)
    assert unpacked.read_bytes() == tiny_gguf.read_bytes()


def test_split_gguf_default_output_name(split_gguf: list[Path], tmp_path: Path) -> None:
    """Without -o the executable is named after the model, not after its first part; checked up to the
    point where the output name is decided, through the same context manager the build uses."""
    args = BuildOptions(gguf=str(split_gguf[0]), quiet=True)
    with resolve_weights(args) as (gguf, source, output):
        assert output == split_gguf[0].with_name("tiny.llmpack")
        assert gguf.name == "tiny.gguf" and gguf.parent.parent == split_gguf[0].parent
        merge_folder = gguf.parent
        assert merge_folder.name.startswith(".tiny.llmpack.merge-")
    assert not merge_folder.exists()


def test_merged_gguf_removed_when_the_build_fails(split_gguf: list[Path], tmp_path: Path) -> None:
    """A failure after the merge (here: bad --args, checked once the weights are resolved)."""
    result = llmpack("build", str(split_gguf[0]), "-o", str(tmp_path / "x.llmpack"), "--args", "-p 'unclosed")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == ["llmpack: merging the 3 parts of tiny-00001-of-00003.gguf",
                                          "error: --args: No closing quotation"]
    assert list(tmp_path.iterdir()) == []


def test_merged_gguf_removed_on_ctrl_c(tmp_path: Path) -> None:
    """Ctrl-C while merging: 2 parts of 1 GiB each (sparse on disk), interrupted once the merge writes."""
    parts_dir, out_dir = tmp_path / "parts", tmp_path / "out"
    parts_dir.mkdir()
    out_dir.mkdir()
    first = write_sparse_split(parts_dir / "big.gguf", n_parts=2, n_floats=256 << 20)
    child = subprocess.Popen([LLMPACK, "build", str(first), "-o", str(out_dir / "big.llmpack")],
                             stderr=subprocess.PIPE, text=True, env={**os.environ})
    deadline = time.monotonic() + 60
    while not any(p.name.endswith(".partial") for p in out_dir.glob(".big.llmpack.merge-*/*")):
        assert time.monotonic() < deadline and child.poll() is None, child.stderr.read()
        time.sleep(0.02)
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == messages.INTERRUPTED
    assert list(out_dir.iterdir()) == []


def write_sparse_split(path: Path, n_parts: int, n_floats: int) -> Path:
    """A split GGUF of `n_parts` parts, one big F32 tensor each, whose data is a sparse (zero) region."""
    def kv(key: str, type_: int, payload: bytes) -> bytes:
        return struct.pack("<Q", len(key)) + key.encode() + struct.pack("<I", type_) + payload

    names = []
    for no in range(n_parts):
        entries = [kv("general.architecture", 8, struct.pack("<Q", 5) + b"llama")] if no == 0 else []
        entries += [kv("split.no", 2, struct.pack("<H", no)), kv("split.count", 2, struct.pack("<H", n_parts)),
                    kv("split.tensors.count", 5, struct.pack("<i", n_parts))]
        name = f"big{no}.weight".encode()
        header = b"GGUF" + struct.pack("<IQQ", 3, 1, len(entries)) + b"".join(entries)
        header += struct.pack("<Q", len(name)) + name + struct.pack("<IQIQ", 1, n_floats, 0, 0)
        part = path.with_name(f"{path.stem}-{no + 1:05d}-of-{n_parts:05d}.gguf")
        with open(part, "wb") as f:
            f.write(header)
            f.truncate(-(-len(header) // 32) * 32 + 4 * n_floats)
        names.append(part)
    return names[0]


@pytest.mark.slow
def test_split_gguf_from_the_hub(hub: HubStandin, hub_env: dict[str, str], commit: str, tiny_bundle: Path,
                                 tmp_path: Path, expected_completion: str) -> None:
    before = len(hub.requests)
    output = tmp_path / "z.llmpack"
    result = hub_build(hub_env, "--hf-repo", REPO, "--hf-file", "tiny-00001-of-00003.gguf", "-o", str(output))
    assert result.returncode == 0, result.stderr
    assert list(tmp_path.iterdir()) == [output]
    # The later parts come from the commit the first part resolved to, whatever main says by then.
    assert [path for method, path in resolve_requests(hub, before) if method == "GET"] == [
        f"/{REPO}/resolve/main/tiny-00001-of-00003.gguf",
        f"/{REPO}/resolve/{commit}/tiny-00002-of-00003.gguf",
        f"/{REPO}/resolve/{commit}/tiny-00003-of-00003.gguf"]
    document = inspect(output)
    assert document["manifest"]["model"]["source"] == {
        "type": "huggingface", "repo": REPO, "file": "tiny-00001-of-00003.gguf", "revision": commit,
        "parts": 3, "endpoint": hub.url}
    assert document["gguf_sha256"] == inspect(tiny_bundle)["gguf_sha256"]
    result = run([str(output), *PROMPT])
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected_completion
    # Offline, every part comes from the cache: the same weights, not one request.
    before = len(hub.requests)
    again = tmp_path / "offline.llmpack"
    result = hub_build(hub_env, "--hf-repo", REPO, "--hf-file", "tiny-00001-of-00003.gguf", "-o", str(again),
                       HF_HUB_OFFLINE="1")
    assert result.returncode == 0, result.stderr
    assert hub.requests[before:] == []
    assert inspect(again)["gguf_sha256"] == document["gguf_sha256"]
