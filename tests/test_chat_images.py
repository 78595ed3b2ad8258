"""Images and sounds in the terminal chat (runtime/chat/attach.py): the real executable with the tiny
multimodal pair in a real terminal (tmux, as tests/test_chat_terminal.py): /image with Tab completing the
path, a file dropped on the terminal (pasted as its quoted path), a bad file refused in one line with the
chat going on, and the saved conversation (/dump) keeping each file by path. How a terminal types a
dropped file is checked directly."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from llmpack.runtime.chat.attach import dropped_files
from support.commands import build_bundle, run
from support.tiny_multimodal import png_bytes, wav_bytes, write_tiny_audio_projector, write_tiny_multimodal
from test_chat_terminal import PROMPT, QUIET, Terminal, terminal  # noqa: F401 - `terminal` is a fixture

pytestmark = [pytest.mark.slow]

IMAGE_A, IMAGE_B = png_bytes(40, 30, seed=1), png_bytes(40, 30, seed=2)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("chat media")  # a space in the path, as dropped files often have
    (folder / "alpha.png").write_bytes(IMAGE_A)
    (folder / "beta.png").write_bytes(IMAGE_B)
    (folder / "it's.png").write_bytes(IMAGE_B)
    (folder / "broken.png").write_bytes(IMAGE_A[:200])  # cut short
    (folder / "notes.txt").write_text("not an image\n")
    (folder / "tone.wav").write_bytes(wav_bytes())
    return folder


@pytest.fixture(scope="module")
def vision_chat_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model, projector = write_tiny_multimodal(tmp_path_factory.mktemp("vision"))
    return build_bundle(model, tmp_path_factory.mktemp("bundle") / "tiny-vision.llmpack", "--mmproj", str(projector))


def reply_after(screen: str, line: str) -> str:
    """The reply shown after the last prompt that sent `line`."""
    return screen.rsplit(PROMPT + line + "\n", 1)[1].rsplit("\n" + PROMPT.rstrip(), 1)[0]


def paste(chat: Terminal, text: str) -> None:
    """Pastes as a terminal does when a file is dropped on it (bracketed paste), then Enter."""
    chat._tmux("set-buffer", text)
    chat._tmux("paste-buffer", "-p")
    chat.keys("Enter")


def test_chat_reads_attached_and_dropped_images(vision_chat_bundle: Path, files: Path, terminal) -> None:
    chat = terminal(str(vision_chat_bundle), "--chat", "-n", "8", *QUIET)
    chat.wait_for_prompt(1)
    n = 1

    def send(text: str) -> str:
        nonlocal n
        chat.type(text)
        n += 1
        return chat.wait_for_prompt(n)

    chat.keys("-l", f"/image {files}/alp")
    chat.keys("Tab")  # completes alpha.png
    chat.wait_for(lambda s: s.rstrip().endswith("alpha.png"), what="the completed path")
    chat.keys("Enter")
    n += 1
    assert f"attached {files}/alpha.png (PNG 40x30): it goes with your next message" in chat.wait_for_prompt(n)
    first = reply_after(send("what is this?"), "what is this?")
    assert first.strip()

    send("/clear")
    paste(chat, f"'{files}/alpha.png' ")  # as GNOME's terminals type a dropped file
    n += 1
    assert f"attached {files}/alpha.png (PNG 40x30)" in chat.wait_for_prompt(n)
    assert reply_after(send("what is this?"), "what is this?") == first  # the same image, the same greedy reply

    send("/clear")
    escaped = str(files / "beta.png").replace(" ", "\\ ")
    screen = send(f"{escaped} what is this?")  # as iTerm types it, with the question after it
    assert f"attached {files}/beta.png (PNG 40x30)" in screen
    assert reply_after(screen, f"{escaped} what is this?").split("\n", 1)[1] != first  # another image

    screen = send(f"/image {files}/broken.png")
    assert re.findall(r"^error: .*$", screen, re.MULTILINE)[-1] == f"error: {files}/broken.png: the PNG file is cut short (truncated)"
    screen = send(f"/image {files}/notes.txt")
    assert f"error: {files}/notes.txt: not a format this server reads" in screen
    screen = send(f"/image {files}/tone.wav")
    assert f"error: {files}/tone.wav: a sound (WAV), not an image" in screen  # an image-only projector
    assert reply_after(send("and now?"), "and now?").strip()  # the chat goes on

    send(f"/dump {files}/saved.txt")
    saved = (files / "saved.txt").read_text()
    assert f"### user\n[{files}/beta.png]\nwhat is this?\n\n### assistant\n" in saved
    assert "### user\nand now?" in saved and "broken.png" not in saved  # a refused file is not kept


def test_chat_reads_attached_sounds(vision_chat_bundle: Path, files: Path, tmp_path: Path) -> None:
    projector = write_tiny_audio_projector(tmp_path / "mmproj-audio.gguf")
    result = run([str(vision_chat_bundle), "--mmproj", str(projector), "--chat", "-n", "4", *QUIET],
                 input=f"/audio {files}/tone.wav\nwhat is this?\n/image {files}/alpha.png\n/dump\n")
    assert result.returncode == 0, result.stderr
    assert f"attached {files}/tone.wav (WAV sound)" in result.stderr
    assert f"{files}/alpha.png: an image (PNG), which this model's projector does not read" in result.stderr
    assert f"### user\n[{files}/tone.wav]\nwhat is this?\n\n### assistant\n{result.stdout}" in result.stderr


def test_dropped_paths_as_terminals_type_them(files: Path) -> None:
    a, b = str(files / "alpha.png"), str(files / "beta.png")
    assert dropped_files(f"'{a}' ") == ([a], "")  # GNOME Terminal, Konsole
    assert dropped_files(a.replace(" ", "\\ ") + " what is it?") == ([a], "what is it?")  # iTerm2, Terminal.app
    assert dropped_files(f'"{a}" "{b}" compare them') == ([a, b], "compare them")  # several at once
    assert dropped_files("file://" + a.replace(" ", "%20")) == ([a], "")
    quoted = str(files / "it's.png").replace("'", "'\\''")  # a quote in the name, as a shell quotes it
    assert dropped_files(f"'{quoted}' ") == ([str(files / "it's.png")], "")
    assert dropped_files(f"'{files}/notes.txt' what is it?") == ([], f"'{files}/notes.txt' what is it?")  # text
    assert dropped_files(f"'{files}/missing.png'") == ([], f"'{files}/missing.png'")
    assert dropped_files("hello there") == ([], "hello there")
    assert dropped_files(f"'{a}'s colours?") == ([], f"'{a}'s colours?")  # a quote glued to more text


def test_a_text_only_model_says_so(tiny_bundle: Path, files: Path) -> None:
    result = subprocess.run([str(tiny_bundle), "--chat", "-n", "2", *QUIET], input=f"/image {files}/alpha.png\n",
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    assert result.stderr.strip().splitlines()[-1] == "error: this model reads only text: it has no projector (run it with --mmproj FILE)"
