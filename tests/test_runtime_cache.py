"""The executable starts like a native program (issue 15): the launcher unpacks the runtime once into the
per-user cache and execs it. Nothing in /tmp, one process (a signal reaches the runtime itself), the
cache entry reused and shown by `llmpack inspect`, a fallback when the cache cannot be used."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import httpx
import pytest
from support.commands import llmpack, run
from support.server_fixtures import start_server

pytestmark = pytest.mark.slow
ARGS = ["--cli", "-p", "hi", "-n", "4", "--temp", "0", "--log-disable"]


def cache_entry(executable: Path, cache: Path) -> Path:
    runtime = json.loads(llmpack("inspect", str(executable), "--json").stdout)["runtime"]
    return cache / "runtime" / runtime["sha256"][:16]


@pytest.fixture
def private(tmp_path: Path) -> dict[str, str]:
    """An empty runtime cache and an empty temporary folder, both watched by the tests."""
    (tmp_path / "tmp").mkdir()
    return {"LLMPACK_CACHE": str(tmp_path / "cache"), "TMPDIR": str(tmp_path / "tmp")}


def test_unpacked_once_into_the_cache_and_nothing_in_tmp(tiny_bundle: Path, private: dict[str, str]) -> None:
    cache, tmp = Path(private["LLMPACK_CACHE"]), Path(private["TMPDIR"])
    entry = cache_entry(tiny_bundle, cache)
    assert "not unpacked yet" in llmpack("inspect", str(tiny_bundle), env=private).stdout
    first = run([str(tiny_bundle), *ARGS], env=private)
    assert first.returncode == 0, first.stderr
    program = entry / "llmpack-runtime"
    inode = program.stat().st_ino
    second = run([str(tiny_bundle), *ARGS], env=private)
    assert (second.returncode, second.stdout) == (0, first.stdout)
    assert program.stat().st_ino == inode  # the same files: not unpacked again
    assert sorted(p.name for p in (cache / "runtime").iterdir()) == [entry.name]  # no .partial left
    assert list(tmp.iterdir()) == []
    described = llmpack("inspect", str(tiny_bundle), env=private).stdout
    assert f"{entry} (unpacked;" in described


def test_one_process_and_kill_9_leaves_nothing_behind(tiny_bundle: Path, private: dict[str, str],
                                                      tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in private.items():
        monkeypatch.setenv(name, value)
    server = start_server(tiny_bundle, log_path=tmp_path / "server.log")
    pid = server.process.pid
    # The process we started is the server: the launcher exec'd the runtime in place of itself.
    assert Path(f"/proc/{pid}/exe").resolve() == cache_entry(tiny_bundle, Path(private["LLMPACK_CACHE"])) / "llmpack-runtime"
    children = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _parent(p) == pid]
    assert children == []
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(10)
    with pytest.raises(httpx.TransportError):  # nothing is left serving on the port
        httpx.get(server.url + "health", timeout=2)
    assert list(Path(private["TMPDIR"]).iterdir()) == []


def _parent(proc_entry: Path) -> int | None:
    try:
        return int((proc_entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):  # gone meanwhile
        return None


def test_a_signal_reaches_the_runtime_itself(tiny_bundle: Path, private: dict[str, str], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in private.items():
        monkeypatch.setenv(name, value)
    server = start_server(tiny_bundle, log_path=tmp_path / "server.log")
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(20) in (0, 128 + signal.SIGTERM, -signal.SIGTERM)
    assert list(Path(private["TMPDIR"]).iterdir()) == []


def test_an_unusable_cache_falls_back_to_a_temporary_unpack(tiny_bundle: Path, tmp_path: Path) -> None:
    """A cache path that cannot be a folder (below a file, as a read-only or full disk fails in its own
    way; tests/test_launcher.py mounts those): one warning, the answer, and the temporary folder gone."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {"LLMPACK_CACHE": str(blocker / "cache"), "TMPDIR": str(tmp)}
    result = run([str(tiny_bundle), *ARGS], env=env)
    assert result.returncode == 0 and result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: cannot use the runtime cache "), result.stderr
    assert "unpacking to a temporary folder for this run" in lines[0]
    assert list(tmp.iterdir()) == []


def test_the_program_name_is_the_one_the_user_typed(tiny_bundle: Path, tmp_path: Path) -> None:
    link = tmp_path / "my-model"
    link.symlink_to(tiny_bundle)
    helped = run([str(link), "--help"])
    assert helped.returncode == 0 and "my-model" in helped.stdout and "llmpack-runtime" not in helped.stdout


def test_two_first_starts_at_once_share_one_entry(tiny_bundle: Path, private: dict[str, str]) -> None:
    starts = [subprocess.Popen([str(tiny_bundle), *ARGS], env={**os.environ, **private}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, stdin=subprocess.DEVNULL) for _ in range(3)]
    outputs = [p.communicate(timeout=180) for p in starts]
    assert [p.returncode for p in starts] == [0, 0, 0], [o[1] for o in outputs]
    assert len({o[0] for o in outputs}) == 1
    assert [p.name for p in (Path(private["LLMPACK_CACHE"]) / "runtime").iterdir()] == [
        cache_entry(tiny_bundle, Path(private["LLMPACK_CACHE"])).name]


def test_clean_cache_keeps_this_runtime_and_removes_the_others(tiny_bundle: Path, private: dict[str, str]) -> None:
    cache = Path(private["LLMPACK_CACHE"])
    assert run([str(tiny_bundle), "--version"], env=private).returncode == 0
    own = cache_entry(tiny_bundle, cache)
    old = cache / "runtime" / "0123456789abcdef"
    (old / "_internal").mkdir(parents=True)
    (old / "llmpack-runtime").write_text("an older runtime")
    result = run([str(tiny_bundle), "--clean-cache"], env=private)
    assert result.returncode == 0 and result.stdout == ""
    assert result.stderr.strip() == f"removed {old}"
    assert not old.exists() and (own / "llmpack-runtime").is_file()
    assert run([str(tiny_bundle), *ARGS], env=private).returncode == 0
