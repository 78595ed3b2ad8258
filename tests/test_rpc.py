"""One model over several machines (llama.cpp's RPC backend), all on 127.0.0.1: two workers (the built
executable with --rpc-server) and a main process with --rpc: greedy output identical to the model run
locally, in --cli and through the server; a worker killed mid-generation (the server stays up and says
so, the CLI exits with one line; neither hangs); a worker that is not there at start; and the workers'
tensor cache, whose second start receives only hashes (bytes counted on the wire by a relay)."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import openai
import pytest
from llmpack.runtime import messages
from llmpack.runtime.engine.scheduler import Scheduler
from llmpack.runtime.engine.types import GenerationRequest, SamplingParams
from llmpack.runtime.errors import EngineFailure, EngineUnavailable, UsageError
from llmpack.runtime.flags.settings import parse_args
from llmpack.runtime.flags.stored_args import merge_arguments
from support.commands import error_line, one_error_line, run, warning_line
from support.server_fixtures import start_server
from support.tcp_counter import CountingRelay
from support.tiny_model import write_endless_gguf, write_tiny_gguf
from test_scheduler_unit import ScriptedBackend

PROMPT = "four score and seven"
# One thread each: llama.cpp's threads spin while they wait, and three processes share 2 cores here.
THREADS = ("-t", "1")
# ggml-rpc caches only weights larger than this (HASH_THRESHOLD in ggml-rpc.cpp).
HASH_THRESHOLD = 10 * 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found += [int(entry.name), *_children(int(entry.name))]
        except (OSError, IndexError, ValueError):  # gone meanwhile
            continue
    return found


class Worker:
    def __init__(self, process: subprocess.Popen, port: int, log_path: Path) -> None:
        self.process, self.port, self.log_path = process, port, log_path
        self.endpoint = f"127.0.0.1:{port}"

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL, as a crash: the process serving, whether the executable's launcher runs it as a child
        or is it."""
        for pid in [*_children(self.process.pid), self.process.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(10)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.kill()
            raise


def start_worker(executable: Path, log_path: Path, *args: str) -> Worker:
    port = free_port()
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen([str(executable), "--rpc-server", "--port", str(port), *THREADS, *args],
                                   stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    worker = Worker(process, port, log_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # listening once a connection is accepted (the worker drops it)
        assert process.poll() is None, f"worker exited with {process.returncode}: {worker.log}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return worker
        except OSError:
            time.sleep(0.1)
    worker.kill()
    raise AssertionError(f"worker not listening after 60 s: {worker.log}")


@contextmanager
def workers(executable: Path, folder: Path, n: int = 2, *args: str) -> Iterator[list[Worker]]:
    with ExitStack() as stack:
        started = []
        for i in range(n):
            worker = start_worker(executable, folder / f"worker{i}.log", "--no-rpc-cache", *args)
            stack.callback(lambda w=worker: w.process.poll() is None and w.kill())
            started.append(worker)
        yield started


def rpc_args(started: list[Worker]) -> tuple[str, ...]:
    return ("--rpc", ",".join(w.endpoint for w in started), "-ngl", "99")


@pytest.fixture(scope="module")
def two_workers(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Worker]]:
    with workers(tiny_bundle, tmp_path_factory.mktemp("workers")) as started:
        yield started


@pytest.fixture(scope="module")
def endless_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_endless_gguf(tmp_path_factory.mktemp("models") / "endless.gguf")


def cli(executable: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return run([str(executable), "--cli", "-p", PROMPT, "-n", "48", "--temp", "0", *THREADS, *args], timeout=timeout)


def test_the_executable_carries_the_rpc_backend(tiny_bundle: Path) -> None:
    backends = next(line for line in run([str(tiny_bundle), "--version"]).stdout.splitlines()
                    if line.startswith("backends: "))
    assert backends.endswith("; RPC (--rpc, --rpc-server)"), backends


# -- the same output ---------------------------------------------------------------------------------

# RPC workers compute on the plain CPU buffers (no weights repacked for the CPU's kernels), so the local run
# takes the same path with -nr: greedy text is equal only on the same compute path.
def test_greedy_cli_output_over_two_workers_is_the_local_output(tiny_bundle: Path, two_workers) -> None:
    local = cli(tiny_bundle, "--log-disable", "-nr")
    remote = cli(tiny_bundle, *rpc_args(two_workers), "--verbose")
    assert local.returncode == 0 and remote.returncode == 0, remote.stderr
    assert len(local.stdout) > len(PROMPT) + 20
    assert remote.stdout == local.stdout
    # Both workers hold layers (llama.cpp's load log), and the start log lists them.
    assert all(f"[{w.endpoint}] model buffer size" in remote.stderr for w in two_workers)
    assert "offloaded 3/3 layers" in remote.stderr
    listed = next(line for line in remote.stderr.splitlines() if "RPC devices: " in line)
    assert all(w.endpoint in listed for w in two_workers)


@pytest.mark.parametrize("choice, holder", [(("-ts", "0,1"), 1), (("-dev", "RPC0"), 0)])
def test_tensor_split_and_device_choose_the_workers_that_hold_layers(tiny_bundle: Path, two_workers, choice,
                                                                     holder: int) -> None:
    result = cli(tiny_bundle, *rpc_args(two_workers), *choice, "--verbose")
    assert result.returncode == 0, result.stderr
    holding = [w for w in two_workers if f"[{w.endpoint}] model buffer size" in result.stderr]
    assert holding == [two_workers[holder]]


@pytest.mark.parametrize("argv, message", [
    (["--rpc", "host"], messages.BAD_VALUE.format(flag="--rpc", reason="expected HOST:PORT, got 'host'")),
    (["--rpc", "a:1,a:1"], messages.BAD_VALUE.format(flag="--rpc", reason="an address is given twice")),
    (["--rpc", "a:99999"], messages.BAD_VALUE.format(flag="--rpc", reason="expected HOST:PORT, got 'a:99999'")),
    (["-ts", "3,x"], messages.BAD_VALUE.format(flag="-ts/--tensor-split", reason="expected proportions such as 3,1, got '3,x'")),
    (["--rpc-server", "--server"], messages.RPC_SERVER_WITH_MODE),
    (["--rpc-server", "--rpc", "a:1"], messages.RPC_WORKER_WITH_RPC),
    (["--rpc-server", "--port", "0"], messages.RPC_WORKER_PORT_ZERO),
])
def test_bad_rpc_flags_are_one_line_before_anything_starts(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_args(argv)
    assert str(caught.value) == message


def test_a_worker_typed_replaces_a_stored_mode_and_the_other_way_round() -> None:
    assert parse_args(merge_arguments(["--server", "-c", "4096"], ["--rpc-server"])).settings.mode == "rpc_server"
    assert parse_args(merge_arguments(["--rpc-server"], ["--cli", "-p", "hi"])).settings.mode == "cli"


def test_a_worker_listens_on_port_50052_unless_told() -> None:
    assert parse_args(["--rpc-server"]).settings.port == 50052
    assert parse_args(["--rpc-server", "--port", "8080"]).settings.port == 8080
    assert parse_args([]).settings.port == 8080


def test_rpc_with_ngl_0_says_the_workers_get_no_layer(tiny_bundle: Path, two_workers) -> None:
    result = cli(tiny_bundle, "--rpc", two_workers[0].endpoint, "-ngl", "0")
    assert result.returncode == 0
    assert "llmpack: " + warning_line(messages.RPC_WITHOUT_LAYERS) in result.stderr.splitlines()


def test_greedy_server_output_over_two_workers_is_the_local_output(tiny_bundle: Path, two_workers, tmp_path: Path) -> None:
    local = cli(tiny_bundle, "--log-disable", "--no-display-prompt", "-nr")
    server = start_server(tiny_bundle, *rpc_args(two_workers), *THREADS, log_path=tmp_path / "server.log")
    try:
        client = openai.OpenAI(base_url=server.base_url, api_key="none")
        answer = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=48, temperature=0)
        streamed = "".join(chunk.choices[0].text for chunk in client.completions.create(
            model="tiny", prompt=PROMPT, max_tokens=48, temperature=0, stream=True))
        # A worker serves one process at a time: a second one is told, not left waiting.
        busy = cli(tiny_bundle, *rpc_args(two_workers[:1]), timeout=60)
        assert one_error_line(busy) == error_line(messages.RPC_WORKER_BUSY.format(endpoint=two_workers[0].endpoint))
    finally:
        assert server.interrupt() == 0
    assert answer.choices[0].text == local.stdout == streamed


# -- a worker lost -------------------------------------------------------------------------------------

def test_a_worker_killed_mid_stream_fails_the_stream_and_the_server_stays_up(
        tiny_bundle: Path, endless_gguf: Path, tmp_path: Path) -> None:
    with workers(tiny_bundle, tmp_path) as started:
        server = start_server(tiny_bundle, "-m", str(endless_gguf), "-c", "4096", "-np", "1",
                              *rpc_args(started), *THREADS, log_path=tmp_path / "server.log")
        victim = started[1]
        try:
            events = []
            body = {"prompt": "hello", "max_tokens": 3000, "temperature": 0, "stream": True}
            try:
                with httpx.stream("POST", server.base_url + "/completions", json=body, timeout=30) as response:
                    assert response.status_code == 200
                    for line in response.iter_lines():
                        if line.startswith("data: "):
                            events.append(line.removeprefix("data: "))
                        if len(events) == 5 and victim.process.poll() is None:
                            victim.kill()
            except httpx.HTTPError as exc:
                raise AssertionError(f"{exc!r} after {len(events)} events; the server's log:\n{server.log}") from None
            assert events[-1] == "[DONE]", server.log
            error = json.loads(events[-2])["error"]
            assert error["message"] == messages.RPC_WORKER_LOST.format(endpoints=victim.endpoint)
            assert error["type"] == "unavailable_error"
            chunks = [json.loads(e) for e in events[:-2]]
            assert len(chunks) >= 5 and all(c["choices"][0]["finish_reason"] is None for c in chunks)

            health = httpx.get(server.url + "health", timeout=10)  # still answering, and unhealthy
            assert health.status_code == 503
            assert health.json()["error"]["message"] == messages.RPC_WORKER_LOST.format(endpoints=victim.endpoint)
            refused = httpx.post(server.base_url + "/completions", json={"prompt": "hi", "max_tokens": 4}, timeout=10)
            assert refused.status_code == 503
            assert refused.json()["error"]["message"] == messages.RPC_WORKER_LOST.format(endpoints=victim.endpoint)
            assert httpx.get(server.base_url + "/models", timeout=10).status_code == 200
        finally:
            started_stop = time.monotonic()
            code = server.interrupt(timeout=20)
        assert code == 0 and time.monotonic() - started_stop < 15  # Ctrl-C still stops it promptly
        assert "Traceback" not in server.log


def test_a_worker_killed_while_the_server_is_idle_makes_health_503(tiny_bundle: Path, tmp_path: Path) -> None:
    """ggml-rpc notices a lost worker only when it next talks to it; the server's watcher sooner."""
    with workers(tiny_bundle, tmp_path) as started:
        server = start_server(tiny_bundle, *rpc_args(started), *THREADS, log_path=tmp_path / "server.log")
        try:
            assert httpx.get(server.url + "health", timeout=10).status_code == 200
            started[0].kill()
            deadline = time.monotonic() + 20
            while (health := httpx.get(server.url + "health", timeout=10)).status_code == 200:
                assert time.monotonic() < deadline, server.log
                time.sleep(0.2)
            lost = messages.RPC_WORKER_LOST.format(endpoints=started[0].endpoint)
            assert health.status_code == 503 and health.json()["error"]["message"] == lost
            refused = httpx.post(server.base_url + "/completions", json={"prompt": "hi", "max_tokens": 4}, timeout=10)
            assert refused.status_code == 503 and refused.json()["error"]["message"] == lost
        finally:
            assert server.interrupt(timeout=20) == 0
        assert server.log.count(lost) == 1  # one report, whoever noticed first


def test_a_worker_killed_mid_generation_ends_the_cli_with_one_line(
        tiny_bundle: Path, endless_gguf: Path, tmp_path: Path) -> None:
    with workers(tiny_bundle, tmp_path) as started:
        command = [str(tiny_bundle), "--cli", "-m", str(endless_gguf), "-c", "8192", "-p", "hello", "-n", "8000",
                   "--temp", "0", "--log-disable", *rpc_args(started), *THREADS]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        first = threading.Event()
        threading.Thread(target=lambda: (process.stdout.read(16), first.set()), daemon=True).start()
        try:
            assert first.wait(60), f"no output: {process.poll()}, {[w.log for w in started]}"
            started[0].kill()
            _, stderr = process.communicate(timeout=30)  # never a hang
        finally:
            if process.poll() is None:
                process.kill()
        result = subprocess.CompletedProcess(command, process.returncode, "", stderr.decode())
        assert result.returncode == 1
        assert one_error_line(result) == error_line(messages.RPC_WORKER_LOST.format(endpoints=started[0].endpoint))


@pytest.mark.parametrize("mode", ["--cli", "--server"])
def test_a_worker_not_there_at_start_is_one_line_naming_it(tiny_bundle: Path, mode: str) -> None:
    endpoint = f"127.0.0.1:{free_port()}"
    result = run([str(tiny_bundle), mode, "-p", "hi", "--nobrowser", "--port", "0", "--rpc", endpoint], timeout=60)
    assert result.returncode == 1
    assert one_error_line(result) == error_line(messages.RPC_WORKER_UNREACHABLE.format(
        endpoint=endpoint, reason="connection refused"))


def test_a_worker_of_another_protocol_version_is_one_line(tiny_bundle: Path) -> None:
    """A stand-in worker answering ggml-rpc's HELLO with protocol 6.0.0 (ggml-rpc itself would abort)."""
    listener = socket.create_server(("127.0.0.1", 0))
    endpoint = f"127.0.0.1:{listener.getsockname()[1]}"

    def answer() -> None:
        with listener:
            connection, _ = listener.accept()
            with connection:
                connection.recv(1 + 8 + 24)
                connection.sendall(struct.pack("<Q", 28) + bytes([6, 0, 0, 0]) + bytes(24))

    threading.Thread(target=answer, daemon=True).start()
    result = run([str(tiny_bundle), "--cli", "-p", "hi", "--rpc", endpoint, "-ngl", "99"], timeout=60)
    assert one_error_line(result) == error_line(messages.RPC_WORKER_VERSION.format(
        endpoint=endpoint, version="6.0.0", ours="7.0"))


def test_a_lost_worker_fails_what_runs_and_waits_and_refuses_the_rest() -> None:
    """Scheduler.fail, as the abort handler calls it while the decoding thread is stuck in llama.cpp."""
    stuck = threading.Event()

    class StuckBackend(ScriptedBackend):
        def decode(self, tokens, positions, seqs, logits) -> int:
            stuck.set()
            threading.Event().wait()  # as llama_decode waiting for a lost worker: never returns
            return 0

    scheduler = Scheduler(StuckBackend(), n_seq=1, n_batch=16)
    running = scheduler.submit(GenerationRequest((5, 6), 10, SamplingParams()))
    waiting = scheduler.submit(GenerationRequest((7,), 10, SamplingParams()))
    outcomes: list[BaseException] = []

    def consume(stream) -> None:
        try:
            list(stream)
        except EngineFailure as exc:
            outcomes.append(exc)

    consumers = [threading.Thread(target=consume, args=(s,)) for s in (running, waiting)]
    for consumer in consumers:
        consumer.start()
    assert stuck.wait(10)
    lost = EngineUnavailable(messages.RPC_WORKER_LOST.format(endpoints="127.0.0.1:1"))
    scheduler.fail(lost)
    for consumer in consumers:
        consumer.join(10)
    assert outcomes == [lost, lost]
    with pytest.raises(EngineUnavailable):
        next(scheduler.submit(GenerationRequest((5,), 1, SamplingParams())))
    stats = scheduler.stats()
    assert not stats.decoding and stats.failure == str(lost)
    scheduler.close()  # returns: the stuck thread is not waited for


def test_a_lost_worker_fails_an_embedding_in_progress() -> None:
    """An embedding runs as a job on the decoding thread; stuck there, fail() still answers its caller."""
    scheduler = Scheduler(ScriptedBackend(), n_seq=1, n_batch=16)
    started = threading.Event()
    outcome: list[BaseException] = []

    def stuck_job() -> None:
        started.set()
        threading.Event().wait()

    def embed() -> None:
        try:
            scheduler.run_exclusive(stuck_job)
        except EngineUnavailable as exc:
            outcome.append(exc)

    caller = threading.Thread(target=embed)
    caller.start()
    assert started.wait(10)
    lost = EngineUnavailable(messages.RPC_WORKER_LOST.format(endpoints="127.0.0.1:1"))
    scheduler.fail(lost)
    caller.join(10)
    assert outcome == [lost]
    scheduler.close()


# -- the tensor cache ----------------------------------------------------------------------------------

def test_a_worker_keeps_the_weights_so_the_next_start_sends_only_hashes(tiny_bundle: Path, tmp_path: Path) -> None:
    # Feed-forward matrices over ggml-rpc's threshold (64 x 42000 floats, 10.8 MB each, 6 of them).
    big = write_tiny_gguf(tmp_path / "big.gguf", n_ff=42000, name="big-ffn")
    cache = tmp_path / "rpc-cache"
    worker = start_worker(tiny_bundle, tmp_path / "worker.log", "--rpc-cache", str(cache))
    relay = CountingRelay(("127.0.0.1", worker.port))
    try:
        sent = []
        outputs = []
        for _ in range(2):
            relay.reset()
            result = cli(tiny_bundle, "-m", str(big), "-n", "4", "--log-disable", "--rpc", relay.endpoint, "-ngl", "99")
            assert result.returncode == 0, result.stderr
            outputs.append(result.stdout)
            sent.append(relay.sent)
    finally:
        relay.close()
        assert worker.stop() == 0
    cached = sorted(cache.iterdir())
    assert len(cached) == 6 and all(path.stat().st_size > HASH_THRESHOLD for path in cached)
    assert sent[0] > 6 * HASH_THRESHOLD  # the first start sends the weights
    assert sent[1] < sent[0] / 20, sent  # the second, their hashes (and the small tensors)
    assert outputs[0] == outputs[1]
    # One line at start (the endpoint, and that the protocol has no authentication), one at the end.
    assert worker.log.splitlines() == ["llmpack: " + warning_line(messages.RPC_WORKER_LISTENING.format(
        endpoint=f"127.0.0.1:{worker.port}", devices="CPU", threads=1, cache=cache)),
        "llmpack: " + messages.RPC_WORKER_STOPPED]
