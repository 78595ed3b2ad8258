"""llama.cpp's own server test suite (tools/server/tests in the llama.cpp that llama-cpp-python's sdist
vendors, i.e. the version our engine runs), run against our server.

The suite starts `$LLAMA_SERVER_BIN_PATH` with llama-server's flags for every test. This script writes a
shim there that translates those flags into ours and runs our runtime from source (`python -m
llmpack.runtime --server`), and stands in for the models the suite would download from the Hugging Face
hub (which need not be reachable) with tiny random-weight GGUFs (tests/support/tiny_model.py). It runs the
suite's non-slow tests and writes the counts and every test's outcome to bench/results/.

    .venv/bin/python bench/server_suite.py             # the whole non-slow suite (about 20 minutes on 2 cores)
    .venv/bin/python bench/server_suite.py -k test_basic   # extra arguments go to pytest

Random weights cannot give the texts the suite pins for llama.cpp's own test models ("(Ann|Tom)", ...):
those tests fail here by construction, and the README's table counts them apart.
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests" / "support"))

import results as bench_results  # noqa: E402

VERSION = "0.3.36"  # llama-cpp-python's, whose vendored llama.cpp our runtime is compiled from
# The suite's own requirements (tests/requirements.txt), unpinned: its pins predate this Python.
SUITE_PACKAGES = ("pytest", "pytest-timeout", "requests", "wget", "filelock", "numpy", "openai",
                  "prometheus-client", "aiohttp")
TEST_TIMEOUT_S = 180  # a test that waits on something we never send fails instead of stalling the run


def cache_dir() -> Path:
    return Path(os.environ.get("LLMPACK_CACHE") or Path.home() / ".cache" / "llmpack") / "server-suite"


def ensure_sources(log=print) -> Path:
    """The vendored llama.cpp from the sdist (fetched with pip once, then cached)."""
    root = cache_dir() / f"llama-cpp-python-{VERSION}"
    source = root / "vendor" / "llama.cpp"
    if (source / "tools" / "server" / "tests" / "utils.py").exists():
        return source
    download = cache_dir() / "sdist"
    download.mkdir(parents=True, exist_ok=True)
    if not list(download.glob(f"llama_cpp_python-{VERSION}.tar.gz")):
        log(f"server suite: fetching llama-cpp-python {VERSION} sdist (vendors llama.cpp)...")
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                        f"llama-cpp-python=={VERSION}", "-d", str(download)], check=True)
    sdist = next(download.glob(f"llama_cpp_python-{VERSION}.tar.gz"))
    staged = root.with_suffix(".partial")
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    with tarfile.open(sdist) as archive:
        members = [m for m in archive.getmembers()
                   if "/vendor/llama.cpp/tools/server/tests/" in m.name or "/vendor/llama.cpp/models/templates/" in m.name
                   or "/vendor/llama.cpp/src/llama-chat.cpp" in m.name]
        archive.extractall(staged, members=members, filter="data")
    shutil.rmtree(root, ignore_errors=True)
    next(staged.glob("llama_cpp_python-*")).rename(root)
    shutil.rmtree(staged, ignore_errors=True)
    return source


def ensure_suite_python(log=print) -> Path:
    """A virtualenv with the suite's requirements, apart from the project's .venv."""
    venv = cache_dir() / "venv"
    python = venv / "bin" / "python"
    marker = venv / "installed.txt"
    if marker.exists() and marker.read_text() == " ".join(SUITE_PACKAGES):
        return python
    log("server suite: installing its requirements into a virtualenv of its own (once)...")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *SUITE_PACKAGES], check=True)
    marker.write_text(" ".join(SUITE_PACKAGES))
    return python


# -- the models the suite downloads, and their stand-ins -------------------------------------------

# llama-server presets (utils.py's ServerPreset) and the few repositories tests name, by hub repository
# (and file): the kind of tiny model that stands in.
STAND_INS = {
    "ggml-org/test-model-stories260K": "story",
    "ggml-org/test-model-stories260K-infill": "fim",
    "ggml-org/stories15M_MOE": "story",
    "ggml-org/models/bert-bge-small/ggml-model-f16.gguf": "bert",
    "ggml-org/models/jina-reranker-v1-tiny-en/ggml-model-f16.gguf": "reranker",
    "ggml-org/models/tinyllamas/stories260K.gguf": "story",
    "ggml-org/models/tinyllamas/split/stories15M-q8_0-00001-of-00003.gguf": "split",
    "ggml-org/tinygemma3-GGUF:Q8_0": "gemma",
}


def ensure_models() -> dict[str, Path]:
    """Tiny random-weight GGUFs (written once): a llama with ChatML's fallback (stories260K has no
    template), with fill-in-the-middle tokens (the infill preset), with Gemma's template, split in three
    parts, and a reranker."""
    import gguf
    from tiny_model import write_tiny_gguf, write_tiny_reranker

    folder = cache_dir() / "models"
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"story": folder / "stories-standin.gguf", "fim": folder / "stories-infill-standin.gguf",
             "gemma": folder / "tinygemma3-standin.gguf", "reranker": folder / "reranker-standin.gguf",
             "bert": folder / "bert-standin.gguf",
             "split": folder / "split" / "stories15M-standin-00001-of-00003.gguf"}
    writers = {
        "story": lambda p: write_tiny_gguf(p, n_ctx=8192, chat_template=None, fim=True, name="stories standin"),
        "fim": lambda p: write_tiny_gguf(p, n_ctx=8192, chat_template=None, fim=True, name="stories infill standin"),
        "gemma": lambda p: write_tiny_gguf(p, n_ctx=8192, name="tinygemma3 standin"),
        "reranker": lambda p: write_tiny_reranker(p, n_ctx=512, unused_tokens=64),
        "bert": lambda p: write_tiny_reranker(p, n_ctx=1024, pooling=gguf.PoolingType.CLS, unused_tokens=64),
        "split": lambda p: write_tiny_gguf(p.parent / "stories15M-standin.gguf", n_ctx=8192, chat_template=None,
                                           split_max_tensors=8),
    }
    for kind, path in paths.items():
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name.replace(".gguf", ".partial.gguf"))
            written = writers[kind](tmp if kind != "split" else path)
            if kind != "split":
                Path(written).rename(path)
    return paths


# -- the shim: llama-server's command line in, ours out --------------------------------------------

SHIM = '''#!{python}
"""llama-server's command line (as llama.cpp's server tests give it) translated into llmpack's."""
import os, sys
MODELS = {models!r}
STAND_INS = {stand_ins!r}
# Flags whose meaning is ours already or that change nothing here: dropped, with their value if any.
DROPPED = {{"--offline": 0, "--no-jinja": 0, "--no-mmproj": 0, "--hf-file": 1, "--hf-repo": 1}}
args = sys.argv[1:]
repo = file = None
out = []
i = 0
while i < len(args):
    arg = args[i]
    if arg == "--hf-repo":
        repo = args[i + 1]
    elif arg == "--hf-file":
        file = args[i + 1]
    if arg in DROPPED:
        i += 1 + DROPPED[arg]
        continue
    out.append(arg)
    i += 1
if repo is not None:
    key = repo + ("/" + file if file else "")
    kind = STAND_INS.get(key) or STAND_INS.get(repo)
    if kind is None:
        sys.exit("server suite shim: no stand-in for the hub model " + key)
    out = ["-m", MODELS[kind]] + out
elif "-m" not in out and "--model" not in out:
    out = ["-m", MODELS["story"]] + out  # router mode (no model) is not ours: a model stands in
os.execv(sys.executable, [sys.executable, "-m", "llmpack.runtime", "--server", "--nobrowser", *out])
'''


def write_shim(models: dict[str, Path]) -> Path:
    shim = cache_dir() / "llama-server"
    shim.write_text(SHIM.format(python=sys.executable, models={k: str(v) for k, v in models.items()},
                                stand_ins=STAND_INS))
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return shim


# -- running it -------------------------------------------------------------------------------------

def outcomes(junit: Path) -> dict[str, str]:
    """Each test's outcome from pytest's JUnit XML: passed, failed, error or skipped."""
    result: dict[str, str] = {}
    for case in ElementTree.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('classname', '').replace('.', '/')}.py::{case.get('name')}"
        name = name.replace("unit/", "", 1)
        kinds = {child.tag for child in case}
        outcome = ("failed" if "failure" in kinds else "error" if "error" in kinds
                   else "skipped" if "skipped" in kinds else "passed")
        result[name] = outcome
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    args, pytest_args = parser.parse_known_args(argv)  # the rest goes to pytest (-k EXPR, a test file, ...)
    args.pytest_args = pytest_args
    source = ensure_sources()
    python = ensure_suite_python()
    shim = write_shim(ensure_models())
    tests = source / "tools" / "server" / "tests"
    work = cache_dir() / "run"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    junit = work / "junit.xml"
    env = {**os.environ, "LLAMA_SERVER_BIN_PATH": str(shim), "LLAMA_CACHE": str(work / "llama-cache"),
           "LLMPACK_CACHE": str(cache_dir() / "llmpack-cache"), "NO_COLOR": "1"}
    env.pop("SLOW_TESTS", None)
    command = [str(python), "-m", "pytest", "unit", "-m", "not slow", "-p", "no:cacheprovider", "-q", "-rN",
               f"--timeout={TEST_TIMEOUT_S}", f"--junitxml={junit}", *args.pytest_args]
    started = time.time()
    log_path = work / "pytest.log"
    with open(log_path, "w") as log_file:
        subprocess.run(command, cwd=tests, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    elapsed = time.time() - started
    per_test = outcomes(junit) if junit.exists() else {}
    counts = {kind: sum(1 for o in per_test.values() if o == kind) for kind in ("passed", "failed", "error", "skipped")}
    record = {"when": bench_results.now(), "machine": bench_results.machine(os.cpu_count() or 1),
              "llama_cpp_python": VERSION, "command": " ".join(["bench/server_suite.py", *args.pytest_args]),
              "seconds": round(elapsed), "tests": len(per_test), **counts, "outcomes": per_test}
    saved = bench_results.save("server-suite", record)
    shutil.copy2(log_path, saved.with_suffix(".log"))
    print(f"llama.cpp server suite: {counts['passed']} passed, {counts['failed'] + counts['error']} failed, "
          f"{counts['skipped']} skipped of {len(per_test)} tests in {elapsed:.0f} s")
    print(f"per test: {saved}; pytest's output: {saved.with_suffix('.log')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
