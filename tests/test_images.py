"""Images through libmtmd on the real executable: the tiny multimodal pair (tests/support/tiny_multimodal.py)
built into one file with its projector, run with --cli --image and --server, called with httpx and the
official openai, anthropic and ollama clients; a hypothesis fuzz of malformed files through every dialect."""

from __future__ import annotations

import base64
import struct
import zlib
from pathlib import Path

import anthropic
import httpx
import ollama
import openai
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from llmpack.runtime.server.media_parts import REMOTE_REFUSED
from support.commands import run
from support.server_fixtures import ServerProcess, running_server
from support.tiny_multimodal import (IMAGE_TOKENS, png_bytes, png_header_only, wav_bytes, write_tiny_audio_projector)

IMAGE_A, IMAGE_B = png_bytes(40, 30, seed=1), png_bytes(40, 30, seed=2)
GREEDY = {"max_tokens": 8, "temperature": 0}


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


@pytest.fixture(scope="module")
def server(vision_bundle: Path, tmp_path_factory: pytest.TempPathFactory):
    with running_server(vision_bundle, "-c", "1024", "-np", "2",
                        log_path=tmp_path_factory.mktemp("vision-server") / "log") as running:
        running.peak_at_start = _peak_rss_kib(running)
        yield running


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="-")


def ask(client: openai.OpenAI, *images: bytes, text: str = "what is this?"):
    content = [{"type": "text", "text": text}, *({"type": "image_url", "image_url": {"url": data_url(i)}} for i in images)]
    return client.chat.completions.create(model="tiny-vision", messages=[{"role": "user", "content": content}], **GREEDY)


def test_cli_same_image_same_output_other_image_other_output(vision_bundle: Path, tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(IMAGE_A)
    (tmp_path / "b.png").write_bytes(IMAGE_B)

    def complete(image: str) -> str:
        result = run([str(vision_bundle), "--cli", "--image", str(tmp_path / image), "-p", " the cat", "-n", "8",
                      "--temp", "0", "--log-disable"])
        assert result.returncode == 0, result.stderr
        return result.stdout

    first = complete("a.png")
    assert first.startswith(" the cat") and len(first) > len(" the cat")
    assert complete("a.png") == first
    assert complete("b.png") != first
    both = run([str(vision_bundle), "--cli", "--image", f"{tmp_path / 'a.png'},{tmp_path / 'b.png'}", "-p",
                "x <__media__> y <__media__> z", "-n", "2", "--temp", "0", "--log-disable"])
    assert both.returncode == 0 and both.stdout.startswith("x <__media__> y <__media__> z"), both.stderr
    text_only = run([str(vision_bundle), "--cli", "--no-mmproj", "--image", str(tmp_path / "a.png"), "-p", "hi"])
    assert text_only.returncode == 1 and "reads text only" in text_only.stderr


def test_server_reads_images_into_the_sequence(client: openai.OpenAI) -> None:
    first = ask(client, IMAGE_A)
    again = ask(client, IMAGE_A)
    other = ask(client, IMAGE_B)
    assert first.choices[0].message.content == again.choices[0].message.content
    assert other.choices[0].message.content != first.choices[0].message.content
    # The image's tokens count in usage, and the same image is found again in the prompt cache.
    plain = client.chat.completions.create(model="tiny-vision", messages=[{"role": "user", "content": "what is this?"}],
                                           **GREEDY)
    assert first.usage.prompt_tokens - plain.usage.prompt_tokens >= IMAGE_TOKENS
    assert again.usage.prompt_tokens_details.cached_tokens == again.usage.prompt_tokens - 1
    two = ask(client, IMAGE_A, IMAGE_B)
    assert IMAGE_TOKENS < two.usage.prompt_tokens - first.usage.prompt_tokens <= IMAGE_TOKENS + 2
    assert two.choices[0].message.content not in (first.choices[0].message.content, other.choices[0].message.content)


def test_images_across_turns_and_against_the_context(client: openai.OpenAI, server: ServerProcess) -> None:
    image = {"type": "image_url", "image_url": {"url": data_url(IMAGE_A)}}
    turns = [{"role": "user", "content": [{"type": "text", "text": "one"}, image]},
             {"role": "assistant", "content": "yes"},
             {"role": "user", "content": [{"type": "text", "text": "two"}, image, image]}]
    answer = client.chat.completions.create(model="tiny-vision", messages=turns, **GREEDY)
    assert answer.usage.prompt_tokens > 3 * IMAGE_TOKENS
    counted = httpx.post(server.base_url + "/chat/completions/input_tokens", json={"messages": turns}, timeout=30)
    assert counted.json()["input_tokens"] == answer.usage.prompt_tokens
    too_many = [{"role": "user", "content": [{"type": "text", "text": "all"}, *[image] * 70]}]  # 70 x 16 > 1024
    response = httpx.post(server.base_url + "/chat/completions", json={"messages": too_many}, timeout=60)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "exceed_context_size_error"


def test_official_clients_send_an_image(server: ServerProcess, client: openai.OpenAI) -> None:
    responses = client.responses.create(model="tiny-vision", max_output_tokens=8, temperature=0, input=[{
        "role": "user", "content": [{"type": "input_text", "text": "what is this?"},
                                    {"type": "input_image", "image_url": data_url(IMAGE_A)}]}])
    assert responses.status in ("completed", "incomplete") and responses.usage.input_tokens > IMAGE_TOKENS
    claude = anthropic.Anthropic(base_url=server.url, api_key="-")
    message = claude.messages.create(model="tiny-vision", max_tokens=8, messages=[{
        "role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                 "data": base64.b64encode(IMAGE_A).decode()}},
                                    {"type": "text", "text": "what is this?"}]}])
    assert message.usage.input_tokens > IMAGE_TOKENS and message.stop_reason in ("end_turn", "max_tokens")
    local = ollama.Client(host=server.url.rstrip("/"))
    reply = local.chat(model=local.list().models[0].model, options={"temperature": 0, "num_predict": 8},
                       messages=[{"role": "user", "content": "what is this?", "images": [IMAGE_A]}])
    assert reply.prompt_eval_count > IMAGE_TOKENS and reply.done
    generated = local.generate(model=local.list().models[0].model, prompt="what is this?", images=[IMAGE_B],
                               options={"temperature": 0, "num_predict": 8})
    assert generated.prompt_eval_count > IMAGE_TOKENS


def test_remote_urls_are_refused(client: openai.OpenAI, server: ServerProcess) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="tiny-vision", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}])
    assert raised.value.body["message"] == REMOTE_REFUSED.format(param="messages.0.content.0")
    claude = anthropic.Anthropic(base_url=server.url, api_key="-")
    with pytest.raises(anthropic.BadRequestError) as refused:
        claude.messages.create(model="tiny-vision", max_tokens=8, messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "url", "url": "http://192.168.1.1/admin.png"}}]}])
    assert "remote URLs are not fetched" in refused.value.body["error"]["message"]
    with pytest.raises(openai.BadRequestError) as audio:  # this projector reads images only
        client.chat.completions.create(model="tiny-vision", messages=[{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": base64.b64encode(wav_bytes()).decode(), "format": "wav"}}]}])
    assert "images only" in audio.value.body["message"]


# -- the fuzz --------------------------------------------------------------------------------------

def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _corrupt_png(noise: bytes) -> bytes:
    """Well-formed chunks around image data that does not inflate: only decoding finds it."""
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0))
            + _chunk(b"IDAT", noise) + _chunk(b"IEND", b""))


BAD_FILES = st.one_of(
    st.integers(1, len(IMAGE_A) - 1).map(lambda n: ("image/png", IMAGE_A[:n])),  # truncated
    st.binary(min_size=0, max_size=64).map(lambda b: ("image/png", b)),  # random, zero-size
    st.tuples(st.integers(5000, 100_000), st.integers(5000, 100_000)).map(
        lambda wh: ("image/png", png_header_only(*wh))),  # a pixel-count bomb
    st.binary(min_size=8, max_size=64).map(lambda b: ("image/png", _corrupt_png(b))),  # corrupt data
    st.sampled_from([("image/png", wav_bytes(0.1)), ("image/png", b"\xff\xd8\xff\xe0" + b"\x00" * 32),
                     ("image/gif", b"GIF89a" + b"\xff" * 8), ("audio/wav", wav_bytes(0.1)[:60])]),  # headers alone
)
# A good image under another label: Ollama's images carry no label, so only the other dialects see these.
MISLABELLED = st.sampled_from([("image/jpeg", IMAGE_A), ("audio/wav", IMAGE_A), ("image/gif", IMAGE_B)])


def _send(server: ServerProcess, dialect: str, mime: str, data: bytes, raw_base64: str | None = None) -> httpx.Response:
    encoded = raw_base64 if raw_base64 is not None else base64.b64encode(data).decode()
    url = f"data:{mime};base64,{encoded}"
    if dialect == "openai":
        return httpx.post(server.base_url + "/chat/completions", timeout=60, json={"max_tokens": 2, "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": url}}]}]})
    if dialect == "responses":
        return httpx.post(server.base_url + "/responses", timeout=60, json={"max_output_tokens": 2, "input": [
            {"role": "user", "content": [{"type": "input_image", "image_url": url}]}]})
    if dialect == "anthropic":
        return httpx.post(server.url + "v1/messages", timeout=60, json={"max_tokens": 2, "model": "x", "messages": [
            {"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": mime,
                                                                      "data": encoded}}]}]})
    return httpx.post(server.url + "api/chat", timeout=60, json={"model": "tiny-vision", "stream": False, "messages": [
        {"role": "user", "content": "hi", "images": [encoded]}]})


def _peak_rss_kib(server: ServerProcess) -> int:
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dialect=st.sampled_from(["openai", "responses", "anthropic", "ollama"]),
       bad=st.one_of(BAD_FILES, MISLABELLED), raw=st.one_of(st.none(), st.none(), st.sampled_from(["!!!", "abc", "aGk"])))
def test_fuzz_malformed_images_are_400s(server: ServerProcess, dialect: str, bad: tuple[str, bytes], raw: str | None) -> None:
    mime, data = bad
    assume(not (dialect == "ollama" and data in (IMAGE_A, IMAGE_B) and raw is None))
    response = _send(server, dialect, mime, data, raw)
    assert response.status_code == 400, (dialect, mime, data[:40], response.text)


def test_after_the_fuzz_the_server_serves_with_bounded_memory(server: ServerProcess, client: openai.OpenAI) -> None:
    """Runs after the fuzz (file order): the server's peak memory over everything this module sent."""
    for size in (50_000, 4097):  # bombs whose decoded size would be 7.5 GB and 50 MB: refused from the header
        assert _send(server, "openai", "image/png", png_header_only(size, size)).status_code == 400
    assert httpx.get(server.url + "health", timeout=10).status_code == 200
    assert ask(client, IMAGE_A).choices[0].finish_reason in ("stop", "length")
    grown_mib = (_peak_rss_kib(server) - server.peak_at_start) / 1024
    print(f"peak RSS {_peak_rss_kib(server) / 1024:.1f} MiB, grown by {grown_mib:.1f} MiB from the start over the module's images, bombs and fuzz")
    assert grown_mib < 128, grown_mib


# -- sound -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def audio_server(vision_bundle: Path, tmp_path_factory: pytest.TempPathFactory):
    """The same executable with an audio projector given at run time (--mmproj wins over the carried one)."""
    folder = tmp_path_factory.mktemp("audio")
    projector = write_tiny_audio_projector(folder / "mmproj-tiny-audio.gguf")
    with running_server(vision_bundle, "-c", "1024", "--mmproj", str(projector), log_path=folder / "log") as running:
        yield running


def test_sounds_through_an_audio_projector(audio_server: ServerProcess) -> None:
    client = openai.OpenAI(base_url=audio_server.base_url, api_key="-")

    def hear(sound: bytes):
        return client.chat.completions.create(model="tiny-vision", messages=[{"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "input_audio", "input_audio": {"data": base64.b64encode(sound).decode(), "format": "wav"}}]}],
            **GREEDY)

    first, again, other = hear(wav_bytes(1.0, freq=440)), hear(wav_bytes(1.0, freq=440)), hear(wav_bytes(1.0, freq=880))
    assert first.choices[0].message.content == again.choices[0].message.content
    assert other.choices[0].message.content != first.choices[0].message.content
    assert first.usage.prompt_tokens > 375  # a 30 s chunk: 1500 positions stacked by 4
    for bad, words in ((wav_bytes(1.0)[:100], "cut short"), (b"RIFF\xff\xff\xff\x7fWAVEfmt ", "cut short"),
                       (IMAGE_A, "labelled audio/wav, but the data is a PNG image")):
        with pytest.raises(openai.BadRequestError) as raised:
            hear(bad)
        assert words in raised.value.body["message"]
    with pytest.raises(openai.BadRequestError) as image:
        ask(client, IMAGE_A)
    assert "sound only" in image.value.body["message"]
