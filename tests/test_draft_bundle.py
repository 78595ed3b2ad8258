"""The draft model in the executable (`llmpack build --draft`), as the projector is carried: after the
weights (and the projector) with its own sha256; inspect, --verify (inspect's and the executable's),
unpack --draft and repack cover it; the runtime reads it in place and speculates with it, -md replaces
it, -m other weights leave it out; a projector or another tokenizer is refused at build time."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import httpx
import pytest
from llmpack.bundler import messages
from llmpack.runtime.bundle.projector import GGUF_MISMATCH
from support.commands import build_bundle, error_line, llmpack, one_error_line, run
from support.server_fixtures import running_server
from support.tiny_model import write_tiny_gguf, write_tiny_reranker
from support.tiny_multimodal import write_tiny_multimodal


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("draft-files")
    model, projector = write_tiny_multimodal(folder)
    draft = folder / "draft.gguf"
    shutil.copyfile(model, draft)  # the model drafting for itself: the same vocabulary, every draft kept
    other = write_tiny_gguf(folder / "other.gguf", n_ctx=1024, seed=4, n_layer=1)  # the same vocabulary
    return {"model": model, "projector": projector, "draft": draft, "other": other,
            "reranker": write_tiny_reranker(folder / "reranker.gguf")}


@pytest.fixture(scope="module")
def bundle(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Weights, a projector and a draft model: two GGUFs after the weights."""
    return build_bundle(files["model"], tmp_path_factory.mktemp("draft-bundle") / "d.llmpack",
                        "--mmproj", str(files["projector"]), "--draft", str(files["draft"]))


def inspect(path: Path, *extra: str) -> dict:
    result = llmpack("inspect", "--json", *extra, str(path))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_inspect_verify_unpack_see_the_draft(bundle: Path, files: dict[str, Path], tmp_path: Path) -> None:
    found = inspect(bundle, "--verify")
    entry, projector = found["manifest"]["draft"], found["manifest"]["mmproj"]
    assert found["verified"] is True
    assert entry["sha256"] == sha256(files["draft"]) and entry["length"] == files["draft"].stat().st_size
    assert entry["file"] == "draft.gguf" and entry["offset"] % 65536 == 0
    assert entry["offset"] >= projector["offset"] + projector["length"]  # after the projector
    assert f"draft model     draft.gguf: offset {entry['offset']}" in llmpack("inspect", str(bundle)).stdout
    result = llmpack("unpack", str(bundle), "-o", str(tmp_path / "m.gguf"), "--mmproj", str(tmp_path / "p.gguf"),
                     "--draft", str(tmp_path / "d.gguf"))
    assert result.returncode == 0, result.stderr
    for written, original in (("m.gguf", "model"), ("p.gguf", "projector"), ("d.gguf", "draft")):
        assert (tmp_path / written).read_bytes() == files[original].read_bytes(), written
    # One flipped byte inside the draft: --verify (inspect's and the executable's) says so.
    damaged = tmp_path / "damaged.llmpack"
    data = bytearray(bundle.read_bytes())
    data[entry["offset"] + entry["length"] // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    damaged.chmod(0o755)
    assert one_error_line(llmpack("inspect", "--verify", str(damaged))) == error_line(
        messages.DRAFT_MISMATCH.format(path=damaged))
    assert GGUF_MISMATCH.format(what="draft model", path=damaged) in run(
        [str(damaged), "--verify", "--cli", "-p", "hi", "-n", "1"]).stderr
    nothing = llmpack("unpack", str(build_bundle(files["other"], tmp_path / "plain.llmpack")), "-o",
                      str(tmp_path / "x.gguf"), "--draft", str(tmp_path / "y.gguf"))
    assert one_error_line(nothing) == error_line(messages.DRAFT_NONE_IN_BUNDLE.format(path=tmp_path / "plain.llmpack"))


def speculation(executable: Path, log: Path, *extra: str) -> tuple[str, dict]:
    """A greedy completion through the server, and its speculation counters."""
    with running_server(executable, "-c", "1024", "-np", "1", *extra, log_path=log) as server:
        body = {"prompt": "the cat the cat", "n_predict": 24, "temperature": 0, "ignore_eos": True}
        text = httpx.post(server.url + "completion", json=body, timeout=60).json()["content"]
        speculative = httpx.get(server.url + "slots", timeout=30).json()[0]["speculative"]
        metrics = server.metrics()
    return text, {"speculative": speculative, "drafted": metrics["llamacpp:spec_decode_num_draft_tokens_total"],
                  "accepted": metrics["llamacpp:spec_decode_num_accepted_tokens_total"]}


@pytest.mark.slow
def test_the_carried_draft_speculates_and_repack_keeps_or_drops_it(bundle: Path, files: dict[str, Path],
                                                                     tmp_path: Path) -> None:
    text, counts = speculation(bundle, tmp_path / "carried.log")
    assert counts["speculative"] and counts["drafted"] == counts["accepted"] > 0, counts  # itself: all kept
    plain, counts = speculation(bundle, tmp_path / "other.log", "-m", str(files["model"]))
    assert plain == text and not counts["speculative"] and counts["drafted"] == 0  # -m: a draft of its own only
    _, counts = speculation(bundle, tmp_path / "md.log", "-md", str(files["other"]))
    assert counts["speculative"] and counts["accepted"] < counts["drafted"], counts  # -md replaces the carried one
    kept = tmp_path / "kept.llmpack"
    assert llmpack("repack", str(bundle), "--no-mmproj", "-o", str(kept)).returncode == 0
    manifest = inspect(kept, "--verify")["manifest"]
    assert manifest["draft"]["sha256"] == sha256(files["draft"]) and "mmproj" not in manifest
    assert speculation(kept, tmp_path / "kept.log")[0] == text  # read from its new place
    dropped = tmp_path / "dropped.llmpack"
    assert llmpack("repack", str(bundle), "--no-draft", "-o", str(dropped)).returncode == 0
    assert "draft" not in inspect(dropped)["manifest"]
    replaced = tmp_path / "replaced.llmpack"
    assert llmpack("repack", str(dropped), "--draft", str(files["other"]), "-o", str(replaced)).returncode == 0
    assert inspect(replaced, "--verify")["manifest"]["draft"]["sha256"] == sha256(files["other"])


def test_a_draft_that_cannot_draft_is_refused_at_build(files: dict[str, Path], tmp_path: Path) -> None:
    projector = llmpack("build", str(files["model"]), "--draft", str(files["projector"]), "-o", str(tmp_path / "a"))
    assert one_error_line(projector) == error_line(messages.DRAFT_NOT_A_MODEL.format(
        path=files["projector"], reason="it is a multimodal projector (--mmproj)"))
    other = llmpack("build", str(files["model"]), "--draft", str(files["reranker"]), "-o", str(tmp_path / "b"))
    assert "its tokenizer differs from the weights'" in one_error_line(other)
    sidecar = llmpack("build", str(files["model"]), "--draft", str(files["draft"]), "--sidecar", "-o", str(tmp_path / "c"))
    assert one_error_line(sidecar) == error_line(messages.DRAFT_WITH_SIDECAR)
