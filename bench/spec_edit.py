"""A code-editing task with n-gram speculation: a 347-line Python file in the prompt, "return it with this
one change", greedy, SmolLM2-135M-Instruct; generation tokens/s of the first --tokens tokens of the
answer, ours plain and with --spec-type ngram-simple, against native llama-server (same llama.cpp,
bench/native.py) plain and with its n-gram types, the same flags, in one run: every server is started at
once, each answers once to fill its prompt cache, then the --rounds are alternated among them (the prompt
is then cached everywhere: generation alone is timed, and a busy machine's drift is shared).

With --draft, a draft model too: SmolLM2-135M drafting for itself (the only SmolLM2 at hand; a larger
one of the same vocabulary is where a draft pays), ours -md FILE against native -md FILE --spec-type
draft-simple, both at the default --spec-draft-n-max (3). Acceptance: drafted tokens kept / drafted,
from native's timings (draft_n, draft_n_accepted) and our /metrics counters, over the measured rounds.

    .venv/bin/python bench/spec_edit.py [--rounds 2] [--tokens 512] [--threads N] [--draft] [--no-ngram]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
from load import free_port, serving  # noqa: E402
from native import ensure_native_tools  # noqa: E402
from results import machine, save  # noqa: E402
from smollm2 import build_smollm2, smollm2_gguf  # noqa: E402

SOURCE = ("904c065", "runtime/engine/scheduler.py")  # a fixed file: the numbers stay comparable
CHANGE = "Rename the constant KV_CACHE_FULL to KV_FULL everywhere. Return the whole file with only this change."
OURS = {"plain": [], "ngram-simple": ["--spec-type", "ngram-simple"],
        "ngram-simple n4 m16": ["--spec-type", "ngram-simple", "--spec-ngram-simple-size-n", "4",
                                "--spec-ngram-simple-size-m", "16"]}
NATIVE = {"plain": [], "ngram-simple": ["--spec-type", "ngram-simple"],
          "ngram-simple n4 m16": ["--spec-type", "ngram-simple", "--spec-ngram-simple-size-n", "4",
                                  "--spec-ngram-simple-size-m", "16"],
          "ngram-mod": ["--spec-type", "ngram-mod"], "ngram-map-k": ["--spec-type", "ngram-map-k"]}


def prompt() -> str:
    code = subprocess.run(["git", "show", f"{SOURCE[0]}:{SOURCE[1]}"], cwd=REPO, check=True,
                          capture_output=True, text=True).stdout
    return (f"<|im_start|>user\n{CHANGE}\n```python\n{code}```<|im_end|>\n"
            "<|im_start|>assistant\n```python\n")


def generation_speed(base: str, text: str, tokens: int) -> tuple[float, str, tuple[int, int] | None]:
    """Tokens/s, the answer, and (drafted, accepted) where the server's timings say (native's do)."""
    body = {"prompt": text, "n_predict": tokens, "temperature": 0, "cache_prompt": True}
    answer = httpx.post(base + "/completion", json=body, timeout=900).json()
    timings = answer["timings"]
    drafts = (timings["draft_n"], timings["draft_n_accepted"]) if "draft_n" in timings else None
    return timings["predicted_per_second"], answer["content"], drafts


def spec_counters(base: str) -> tuple[int, int]:
    """Our /metrics' drafted and accepted token counters (0, 0 where the server has none)."""
    values = {}
    for line in httpx.get(base + "/metrics", timeout=30).text.splitlines():
        if line.startswith("llamacpp:spec_decode_num_"):
            name, value = line.rsplit(" ", 1)
            values[name.removeprefix("llamacpp:")] = int(float(value))
    return values.get("spec_decode_num_draft_tokens_total", 0), values.get("spec_decode_num_accepted_tokens_total", 0)


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the servers are stopped on the way out
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--draft", action="store_true", help="also the draft model (SmolLM2 drafting for itself)")
    parser.add_argument("--no-ngram", action="store_true", help="leave the n-gram settings out")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="-t for both servers (1 on a machine others load: OpenMP's barriers stall there)")
    args = parser.parse_args()
    model = smollm2_gguf()
    native_bin = ensure_native_tools(log=lambda m: print(m, file=sys.stderr))
    threads = str(args.threads)
    common = ["-c", "8192", "-np", "1", "-t", threads]
    text = prompt()
    speeds: dict[str, list[float]] = {}
    answers: dict[str, str] = {}
    acceptance: dict[str, list[int]] = {}  # key -> [drafted, accepted] over the measured rounds
    with tempfile.TemporaryDirectory(prefix="llmpack-spec-edit-") as work:
        exe = build_smollm2(Path(work))
        env = {**os.environ, "LD_LIBRARY_PATH": str(native_bin)}
        ours = {k: v for k, v in OURS.items() if k == "plain" or not args.no_ngram}
        native = {k: v for k, v in NATIVE.items() if k == "plain" or not args.no_ngram}
        if args.draft:
            ours["draft itself"] = ["-md", str(model)]
            native["draft itself"] = ["-md", str(model), "--spec-type", "draft-simple"]
        sides = [("ours", name, [str(exe), "--server", "--nobrowser", "--log-disable", *common, *flags], None)
                 for name, flags in ours.items()]
        sides += [("native", name, [str(native_bin / "llama-server"), "-m", str(model), "--no-webui", "--metrics",
                                    *common, *flags], env)
                  for name, flags in native.items()]
        with contextlib.ExitStack() as running:  # every server up at once, the rounds alternated among them
            bases = {}
            for side, name, command, side_env in sides:
                port = free_port()
                bases[f"{side} {name}"] = running.enter_context(serving([*command, "--port", str(port)], port,
                                                                        env=side_env, timeout=300))
            for base in bases.values():
                generation_speed(base, text, args.tokens)  # fills the prompt cache
            before = {key: spec_counters(base) for key, base in bases.items() if key.startswith("ours ")}
            counted = {key: [0, 0] for key in bases}
            for _ in range(args.rounds):
                for key, base in bases.items():
                    speed, answers[key], drafts = generation_speed(base, text, args.tokens)
                    speeds.setdefault(key, []).append(speed)
                    if drafts:
                        counted[key] = [counted[key][0] + drafts[0], counted[key][1] + drafts[1]]
            for key, base in bases.items():
                if key in before:
                    after = spec_counters(base)
                    counted[key] = [after[0] - before[key][0], after[1] - before[key][1]]
                acceptance[key] = drafted, kept = counted[key]
                said = f"{kept}/{drafted} drafted kept ({kept / drafted:.0%})" if drafted else "no drafts"
                print(f"{key:28s} {statistics.median(speeds[key]):7.1f} tok/s, {said}", flush=True)
    medians = {key: statistics.median(values) for key, values in speeds.items()}
    ratios = {"ours plain vs native plain": medians["ours plain"] / medians["native plain"]}
    best_ours = best_native = None
    if not args.no_ngram:
        best_native = max((k for k in medians if k.startswith("native ngram")), key=medians.get)
        best_ours = max((k for k in medians if k.startswith("ours ngram")), key=medians.get)
        ratios["ours n-gram vs ours plain"] = medians[best_ours] / medians["ours plain"]
        ratios["ours n-gram vs native's best n-gram"] = medians[best_ours] / medians[best_native]
        ratios["ours n-gram vs native's same setting"] = medians["ours ngram-simple"] / medians["native ngram-simple"]
    if args.draft:
        ratios["ours draft vs ours plain"] = medians["ours draft itself"] / medians["ours plain"]
        ratios["ours draft vs native draft"] = medians["ours draft itself"] / medians["native draft itself"]
    same = {key: answers[key] == answers["ours plain"] for key in answers}
    for name, ratio in ratios.items():
        print(f"{name:42s} {ratio:.2f}x")
    print(f"best: ours {best_ours!r}, native {best_native!r}; answers equal to ours plain: {same}")
    path = save("spec-edit", {"machine": machine(int(threads)), "rounds": args.rounds, "tokens": args.tokens,
                              "tokens_per_second": speeds, "medians": medians, "ratios": ratios,
                              "best": {"ours": best_ours, "native": best_native}, "same_answer": same,
                             "drafted_accepted": acceptance})
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
