"""`llmpack repack` (new weights or new runtime, the rest kept), sidecar weights, reproducible bytes,
and runtimes for other targets."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from support.commands import TEST_CACHE, llmpack, run

pytestmark = pytest.mark.slow
GREEDY = ["--cli", "-p", "the cat", "-n", "8", "--log-disable"]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_inputs_give_identical_executables(tiny_gguf: Path, tmp_path: Path) -> None:
    env = {"SOURCE_DATE_EPOCH": "1700000000"}
    first, second = tmp_path / "a" / "m.llmpack", tmp_path / "b" / "m.llmpack"
    for output in (first, second):
        output.parent.mkdir()
        assert llmpack("build", str(tiny_gguf), "-o", str(output), "--args", "--temp 0", "-q", env=env).returncode == 0
    assert sha(first) == sha(second)
    info = json.loads(llmpack("inspect", str(first), "--json").stdout)
    assert info["manifest"]["built_at"] == "2023-11-14T22:13:20Z"


def test_repack_with_new_weights_then_back_is_byte_identical(tiny_gguf: Path, other_gguf: Path, tmp_path: Path) -> None:
    env = {"SOURCE_DATE_EPOCH": "1700000000"}
    original, swapped, restored = (tmp_path / f"{n}.llmpack" for n in ("original", "swapped", "restored"))
    assert llmpack("build", str(tiny_gguf), "-o", str(original), "--args", "--temp 0 ...", "-q", env=env).returncode == 0
    result = llmpack("repack", str(original), "--model", str(other_gguf), "-o", str(swapped), "-q", env=env)
    assert result.returncode == 0, result.stderr
    other = llmpack("run", "-m", str(other_gguf), "--temp", "0", *GREEDY)
    assert run([str(swapped), *GREEDY]).stdout == other.stdout  # new weights, default args kept
    assert json.loads(llmpack("inspect", str(swapped), "--json").stdout)["manifest"]["default_args"] == ["--temp", "0", "..."]
    assert llmpack("repack", str(swapped), "--model", str(tiny_gguf), "-o", str(restored), "-q", env=env).returncode == 0
    assert sha(restored) == sha(original)


def test_repack_with_a_new_runtime_keeps_the_weights(tiny_bundle: Path, tmp_path: Path) -> None:
    runtime_dir = tmp_path / "runtime"
    exported = llmpack("runtime", "-o", str(runtime_dir))
    assert exported.returncode == 0, exported.stderr
    described = json.loads((runtime_dir / "runtime.json").read_text())
    assert described["target"] == "linux-x86_64" and described["min_glibc"].startswith("2.")
    copy = tmp_path / "copy.llmpack"
    copy.write_bytes(tiny_bundle.read_bytes())
    copy.chmod(0o755)
    result = llmpack("repack", str(copy), "--runtime-dir", str(runtime_dir), "--args", "--temp 0")
    assert result.returncode == 0, result.stderr
    before = json.loads(llmpack("inspect", str(tiny_bundle), "--json").stdout)
    after = json.loads(llmpack("inspect", str(copy), "--json").stdout)
    assert after["gguf_sha256"] == before["gguf_sha256"] and after["manifest"]["default_args"] == ["--temp", "0"]
    assert run([str(copy), *GREEDY]).stdout == run([str(tiny_bundle), "--temp", "0", *GREEDY]).stdout


def test_sidecar_weights(tiny_gguf: Path, tmp_path: Path) -> None:
    output = tmp_path / "model.llmpack"
    result = llmpack("build", str(tiny_gguf), "-o", str(output), "--sidecar")
    assert result.returncode == 0, result.stderr
    weights = tmp_path / "model.weights.gguf"
    assert "note: the weights were written beside" in result.stderr
    assert weights.read_bytes() == tiny_gguf.read_bytes()
    assert output.stat().st_size < 100 << 20
    completion = run([str(output), "--verify", "--temp", "0", *GREEDY])
    assert completion.returncode == 0, completion.stderr
    assert completion.stdout == llmpack("run", "-m", str(tiny_gguf), "--temp", "0", *GREEDY).stdout
    assert llmpack("inspect", str(output), "--verify").returncode == 0
    weights.rename(tmp_path / "elsewhere.gguf")
    missing = run([str(output), "--temp", "0", *GREEDY])
    assert missing.returncode == 1 and "weights file" in missing.stderr and "Traceback" not in missing.stderr


def test_large_weights_for_windows_go_beside_the_executable() -> None:
    from llmpack.bundler.targets import wants_sidecar

    assert wants_sidecar("windows-x86_64", 5 << 30, False)
    assert wants_sidecar("darwin-arm64", 4 << 30, False)
    assert not wants_sidecar("linux-x86_64", 50 << 30, False)
    assert not wants_sidecar("windows-x86_64", 1 << 30, False)


def test_other_targets_need_a_runtime_built_there(tiny_gguf: Path, tmp_path: Path) -> None:
    result = llmpack("build", str(tiny_gguf), "-o", str(tmp_path / "x"), "--target", "linux-aarch64")
    assert result.returncode == 1 and "no runtime for linux-aarch64 on this machine" in result.stderr
    unknown = llmpack("build", str(tiny_gguf), "-o", str(tmp_path / "x"), "--target", "beos-ppc")
    assert unknown.returncode == 1 and "unknown target" in unknown.stderr


def test_bundling_for_another_target_with_its_runtime(tiny_gguf: Path, tmp_path: Path) -> None:
    """Bundling is laying out bytes: a runtime built elsewhere (here: this machine's, relabelled as an
    aarch64 build) is bundled without being run."""
    runtime_dir = tmp_path / "aarch64"
    assert llmpack("runtime", "-o", str(runtime_dir)).returncode == 0
    described = json.loads((runtime_dir / "runtime.json").read_text())
    (runtime_dir / "runtime.json").write_text(json.dumps({**described, "target": "linux-aarch64"}))
    output = tmp_path / "arm.llmpack"
    result = llmpack("build", str(tiny_gguf), "-o", str(output), "--target", "linux-aarch64",
                     "--runtime-dir", str(runtime_dir), "--args", "--temp 0")
    assert result.returncode == 0, result.stderr
    assert json.loads(llmpack("inspect", str(output), "--json").stdout)["manifest"]["runtime"]["target"] == "linux-aarch64"
    mismatch = llmpack("build", str(tiny_gguf), "-o", str(output), "--target", "linux-x86_64", "--runtime-dir", str(runtime_dir))
    assert mismatch.returncode == 1 and "was built for linux-aarch64" in mismatch.stderr


def test_cached_runtime_is_reused(tiny_gguf: Path, tmp_path: Path) -> None:
    result = llmpack("build", str(tiny_gguf), "-o", str(tmp_path / "m.llmpack"))
    assert result.returncode == 0
    assert "(cached)" in result.stderr and "freezing" not in result.stderr
    assert str(TEST_CACHE) in result.stderr
    assert os.access(tmp_path / "m.llmpack", os.X_OK)


def test_freezing_the_runtime_twice_gives_the_same_bytes(tmp_path: Path) -> None:
    """The runtime itself is reproducible too: two freezes from the same sources, in separate caches."""
    outputs = []
    for name in ("first", "second"):
        result = llmpack("runtime", "-o", str(tmp_path / name / "out"),
                         env={"LLMPACK_CACHE": str(tmp_path / name / "cache"), "SOURCE_DATE_EPOCH": "1700000000"},
                         timeout=900)
        assert result.returncode == 0, result.stderr
        outputs.append(tmp_path / name / "out" / "llmpack-runtime")
    assert sha(outputs[0]) == sha(outputs[1])
