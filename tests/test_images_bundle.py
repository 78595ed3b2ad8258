"""The projector in the executable (`llmpack build --mmproj`): inspect, --verify, unpack, repack and
reproducible builds cover it; from the hub it is found beside the weights as llama-server's -hf finds it
(the stand-in hub of tests/support/hf_standin.py)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from llmpack.bundler import messages
from llmpack.bundler.mmproj import best_projector
from llmpack.runtime.bundle.projector import PROJECTOR_MISMATCH
from support.commands import error_line, llmpack, one_error_line, run
from support.hf_standin import HubStandin
from support.tiny_multimodal import png_bytes

REPO = "owner/tiny-vision-GGUF"


def inspect(bundle: Path, *extra: str) -> dict:
    result = llmpack("inspect", "--json", *extra, str(bundle))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def describe_image(bundle: Path, image: Path, *extra: str) -> str:
    result = run([str(bundle), "--cli", "--image", str(image), "-p", " the cat", "-n", "6", "--temp", "0",
                  "--log-disable", *extra])
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_inspect_verify_unpack_see_the_projector(vision_bundle: Path, vision_pair: tuple[Path, Path], tmp_path: Path) -> None:
    model, projector = vision_pair
    entry = inspect(vision_bundle, "--verify")["manifest"]["mmproj"]
    assert entry["sha256"] == sha256(projector) and entry["length"] == projector.stat().st_size
    assert entry["file"] == projector.name and entry["offset"] % 65536 == 0
    assert inspect(vision_bundle, "--verify")["verified"] is True
    text = llmpack("inspect", str(vision_bundle)).stdout
    assert f"projector       {projector.name}: offset {entry['offset']}" in text
    result = llmpack("unpack", str(vision_bundle), "-o", str(tmp_path / "m.gguf"), "--mmproj", str(tmp_path / "p.gguf"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "m.gguf").read_bytes() == model.read_bytes()
    assert (tmp_path / "p.gguf").read_bytes() == projector.read_bytes()
    # One flipped byte inside the projector: --verify (inspect's and the executable's) says so.
    damaged = tmp_path / "damaged.llmpack"
    data = bytearray(vision_bundle.read_bytes())
    data[entry["offset"] + entry["length"] // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    damaged.chmod(0o755)
    assert one_error_line(llmpack("inspect", "--verify", str(damaged))) == error_line(
        messages.MMPROJ_MISMATCH.format(path=damaged))
    assert PROJECTOR_MISMATCH.format(path=damaged) in run([str(damaged), "--verify", "--cli", "-p", "hi", "-n", "1"]).stderr


def test_repack_keeps_or_drops_the_projector_and_builds_reproduce(vision_bundle: Path, vision_pair: tuple[Path, Path],
                                                                  tmp_path: Path) -> None:
    model, projector = vision_pair
    (tmp_path / "a.png").write_bytes(png_bytes(40, 30, seed=1))
    seen = describe_image(vision_bundle, tmp_path / "a.png")
    kept = tmp_path / "kept.llmpack"
    assert llmpack("repack", str(vision_bundle), "--args", "-c 512", "-o", str(kept)).returncode == 0
    assert inspect(kept)["manifest"]["mmproj"]["sha256"] == sha256(projector)
    assert describe_image(kept, tmp_path / "a.png") == seen  # the carried projector, read from its new place
    dropped = tmp_path / "dropped.llmpack"
    assert llmpack("repack", str(vision_bundle), "--no-mmproj", "-o", str(dropped)).returncode == 0
    assert "mmproj" not in inspect(dropped)["manifest"]
    assert "reads text only" in run([str(dropped), "--cli", "--image", str(tmp_path / "a.png"), "-p", "x"]).stderr
    # --mmproj at run time gives a file without one its images; --no-mmproj turns a carried one off.
    assert describe_image(dropped, tmp_path / "a.png", "--mmproj", str(projector)) == seen
    epoch = {"SOURCE_DATE_EPOCH": "1700000000"}
    first, second = tmp_path / "r1.llmpack", tmp_path / "r2.llmpack"
    for output in (first, second):
        result = llmpack("build", str(model), "--mmproj", str(projector), "-o", str(output), env=epoch)
        assert result.returncode == 0, result.stderr
    assert first.read_bytes() == second.read_bytes()
    not_one = llmpack("build", str(model), "--mmproj", str(model), "-o", str(tmp_path / "bad.llmpack"))
    assert one_error_line(not_one) == error_line(messages.MMPROJ_NOT_PROJECTOR.format(path=model, architecture="llama"))


def test_llama_servers_choice_among_a_repositorys_projectors() -> None:
    files = ["gemma-Q4_K_M.gguf", "mmproj-gemma-F16.gguf", "mmproj-gemma-F32.gguf", "sub/mmproj-gemma-Q4_0.gguf",
             "README.md", "mmproj-notes.txt"]
    assert best_projector(files, "gemma-Q4_K_M.gguf") == "mmproj-gemma-F16.gguf"  # closest to 4 bits at the top
    assert best_projector(files, "sub/gemma-Q4_K_M.gguf") == "sub/mmproj-gemma-Q4_0.gguf"  # the deepest folder
    assert best_projector(["gemma-Q4_K_M.gguf"], "gemma-Q4_K_M.gguf") is None


@pytest.fixture(scope="module")
def hub(vision_pair: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory):
    model, projector = vision_pair
    standin = HubStandin(tmp_path_factory.mktemp("hub"))
    standin.add_repo(REPO, {"tiny-vision-F32.gguf": model, "mmproj-tiny-vision-F16.gguf": projector,
                            "mmproj-tiny-vision-F32.gguf": projector})
    yield standin.start()
    standin.stop()


def test_the_hubs_projector_is_found_like_llama_servers(hub: HubStandin, vision_pair: tuple[Path, Path], tmp_path: Path) -> None:
    model, projector = vision_pair
    env = {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf"), "HF_TOKEN": "", "HF_HUB_OFFLINE": "0"}
    output = tmp_path / "hub.llmpack"
    result = llmpack("build", "--hf-repo", REPO, "--hf-file", "tiny-vision-F32.gguf", "-o", str(output), env=env)
    assert result.returncode == 0, result.stderr
    assert messages.MMPROJ_HUB_SEVERAL.format(repo=REPO, names="mmproj-tiny-vision-F32.gguf, mmproj-tiny-vision-F16.gguf",
                                              chosen="mmproj-tiny-vision-F32.gguf") in result.stderr
    entry = inspect(output)["manifest"]["mmproj"]
    assert entry["file"] == "mmproj-tiny-vision-F32.gguf" and entry["sha256"] == sha256(projector)
    assert entry["source"] == {"type": "huggingface", "repo": REPO, "file": "mmproj-tiny-vision-F32.gguf",
                               "revision": hub.repos[REPO].commit, "endpoint": hub.url}
    named = llmpack("build", "--hf-repo", REPO, "--hf-file", "tiny-vision-F32.gguf", "--mmproj-file",
                    "mmproj-tiny-vision-F16.gguf", "-o", str(tmp_path / "named.llmpack"), env=env)
    assert named.returncode == 0 and inspect(tmp_path / "named.llmpack")["manifest"]["mmproj"]["file"] == \
        "mmproj-tiny-vision-F16.gguf"
    before = len(hub.requests)
    offline = tmp_path / "offline.llmpack"
    result = llmpack("build", "--hf-repo", REPO, "--hf-file", "tiny-vision-F32.gguf", "-o", str(offline),
                     env={**env, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    assert hub.requests[before:] == [] and inspect(offline)["manifest"]["mmproj"]["sha256"] == sha256(projector)
    none = llmpack("build", "--hf-repo", REPO, "--hf-file", "tiny-vision-F32.gguf", "--no-mmproj",
                   "-o", str(tmp_path / "none.llmpack"), env=env)
    assert none.returncode == 0 and "mmproj" not in inspect(tmp_path / "none.llmpack")["manifest"]
    assert os.access(output, os.X_OK)
