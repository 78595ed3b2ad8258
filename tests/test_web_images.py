"""Images and sounds on the web page (web/attach.js), in headless Chromium against the real server with the
tiny multimodal pair: attached with the button, removed, pasted, dropped, sent as image_url parts (the
server's prompt grows by the image's tokens), shown in the conversation and there again after a reload
(kept in IndexedDB), past the storage budget sent but not kept, a deleted chat's files removed; a sound
through an audio projector as an input_audio part. Screenshots at 1280x800
and 390x844, light and dark, are left in the test's folder to look at."""

from __future__ import annotations

import base64
import json
import re
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support.devtools import DevTools, Page
from support.server_fixtures import PAGE_SERVER_ARGS, ServerProcess, running_server
from support.tiny_multimodal import IMAGE_TOKENS, png_bytes, wav_bytes, write_tiny_audio_projector
from support.web_page import browser, dark  # noqa: F401 - `browser` is a fixture

pytestmark = [pytest.mark.slow]

IMAGE_A, IMAGE_B = png_bytes(40, 30, seed=1), png_bytes(48, 32, seed=2)
# Every request body the page sends, recorded as it goes (the page calls fetch through window.fetch).
RECORD = "window.sent = []; const real = window.fetch; window.fetch = (url, options) => { " \
         "window.sent.push([String(url), options && options.body]); return real(url, options); }"
THUMBNAILS = "[...document.querySelectorAll('{where} img.thumb')].map(i => [i.alt, i.naturalWidth, i.complete])"


@pytest.fixture(scope="module")
def vision_server(vision_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    bundle = vision_bundle
    with running_server(bundle, *PAGE_SERVER_ARGS, log_path=tmp_path_factory.mktemp("server") / "log") as running:
        running.bundle = bundle
        yield running


def file_in_page(name: str, data: bytes, mime: str) -> str:
    return f"new File([Uint8Array.from(atob('{base64.b64encode(data).decode()}'), c => c.charCodeAt(0))], '{name}', {{type: '{mime}'}})"


def paste(page: Page, file: str) -> bool:
    """A file pasted into the message box (a screenshot copied, say); True if the page took it."""
    return page.evaluate(f"""(() => {{ const data = new DataTransfer(); data.items.add({file});
        return !document.getElementById('input').dispatchEvent(new ClipboardEvent('paste', {{clipboardData: data, bubbles: true, cancelable: true}})); }})()""")


def drop(page: Page, file: str) -> bool:
    return page.evaluate(f"""(() => {{ const data = new DataTransfer(); data.items.add({file});
        const log = document.getElementById('log');
        log.dispatchEvent(new DragEvent('dragover', {{dataTransfer: data, bubbles: true, cancelable: true}}));
        return !log.dispatchEvent(new DragEvent('drop', {{dataTransfer: data, bubbles: true, cancelable: true}})); }})()""")


def set_file(page: Page, path: Path) -> None:
    node = page.send("DOM.querySelector", nodeId=page.send("DOM.getDocument")["root"]["nodeId"], selector="#file")
    page.send("DOM.setFileInputFiles", nodeId=node["nodeId"], files=[str(path)])


def prompt_tokens(page: Page, index: int) -> int:
    stats = page.wait(f"document.querySelectorAll('.stats').length > {index} && document.querySelectorAll('.stats')[{index}].textContent")
    return int(re.search(r"prompt (\d+) tokens", stats).group(1))


def chat_requests(page: Page) -> list[dict]:
    return [json.loads(body) for url, body in page.evaluate("window.sent") if url.endswith("/v1/chat/completions")]


def test_images_attached_removed_pasted_dropped_sent_and_kept(vision_server: ServerProcess, browser: DevTools,
                                                              tmp_path: Path) -> None:
    props = httpx.get(vision_server.url + "props", timeout=10).json()
    assert props["modalities"] == {"vision": True, "audio": False}
    (tmp_path / "a.png").write_bytes(IMAGE_A)
    (tmp_path / "large.png").write_bytes(smooth_png(2400, 1000))
    page = Page(browser, vision_server.url)
    try:
        page.wait("document.querySelector('label.attach').title.startsWith('Attach images')")
        page.evaluate(RECORD)
        page.send_message("what is this?")  # without an image first: the prompt to compare with
        text_only = prompt_tokens(page, 0)
        page.evaluate("document.getElementById('new-chat').click()")

        set_file(page, tmp_path / "a.png")
        assert page.wait(f"{THUMBNAILS.format(where='#attachments')}.filter(t => t[2] && t[1]).length") == 1
        assert page.evaluate(THUMBNAILS.format(where="#attachments")) == [["a.png", 40, True]]
        page.type("what is this?")
        page.screenshot(tmp_path / "images-tray-phone.png", 390, 844, mobile=True)
        page.screenshot(tmp_path / "images-tray.png", 1280, 800, mobile=False)
        page.evaluate("document.getElementById('input').value = ''")
        page.evaluate("document.querySelector('[aria-label=\"Remove a.png\"]').click()")
        assert page.evaluate("document.getElementById('attachments').children.length") == 0
        assert paste(page, file_in_page("pasted.png", IMAGE_A, "image/png"))
        page.wait(f"{THUMBNAILS.format(where='#attachments')}.length === 1")
        page.send_message("what is this?")
        with_image = prompt_tokens(page, 0)
        assert drop(page, file_in_page("other.png", IMAGE_B, "image/png"))
        page.wait(f"{THUMBNAILS.format(where='#attachments')}.length === 1")
        page.send_message("and this?")
        prompt_tokens(page, 1)
        sent = chat_requests(page)
        shown = page.wait(f"{THUMBNAILS.format(where='#log')}.filter(t => t[2] && t[1]).length === 2 && {THUMBNAILS.format(where='#log')}")
        page.evaluate("document.querySelector('#log button.view').click()")  # the image at its size
        page.wait("document.querySelector('#viewer img').complete")
        viewed = page.evaluate("[document.getElementById('viewer').open, document.querySelector('#viewer img').naturalWidth, "
                               "document.querySelector('#viewer .viewer-name').textContent]")
        page.screenshot(tmp_path / "images-viewer-phone.png", 390, 844, mobile=True)
        page.evaluate("document.getElementById('viewer').click()")
        viewer_closed = page.evaluate("!document.getElementById('viewer').open")
        for mode, suffix in ((False, ""), (True, "-dark")):
            dark(page, mode)
            page.screenshot(tmp_path / f"images-desktop{suffix}.png", 1280, 800, mobile=False)
            page.screenshot(tmp_path / f"images-phone{suffix}.png", 390, 844, mobile=True)
        dark(page, False)
        page.reload()
        after_reload = page.wait(f"{THUMBNAILS.format(where='#log')}.filter(t => t[2] && t[1]).length === 2 && {THUMBNAILS.format(where='#log')}")
        stored = page.evaluate("JSON.parse(localStorage.getItem('llmpack-chats')).flatMap(c => c.messages).filter(m => m.media).map(m => m.media)")
        page.evaluate(RECORD)
        page.evaluate("[...document.querySelectorAll('.turn.user button')].find(b => b.textContent === 'Edit').click()")
        editing = page.evaluate(THUMBNAILS.format(where="#attachments"))  # an edited message keeps its image
        page.evaluate("document.getElementById('cancel-edit').click()")
        set_file(page, tmp_path / "large.png")
        page.wait("!!document.querySelector('#attachments img.thumb') || !document.getElementById('banner').hidden", timeout=60)
        assert page.evaluate("document.getElementById('banner').textContent") == ""
        resized = page.evaluate("document.querySelector('#attachments img.thumb').title")
        page.send_message("and the large one?")
        prompt_tokens(page, 2)
        large = chat_requests(page)[-1]["messages"][-1]["content"][1]["image_url"]["url"]
    finally:
        page.close()
    # The image's tokens in the prompt the server read (a few more for the marker's text around them).
    assert IMAGE_TOKENS <= with_image - text_only <= IMAGE_TOKENS + 4, (text_only, with_image)
    first, second = sent[-2]["messages"], sent[-1]["messages"]
    url = "data:image/png;base64," + base64.b64encode(IMAGE_A).decode()
    assert first[-1]["content"] == [{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": url}}]
    assert second[0] == first[-1] and second[-1]["content"][1]["image_url"]["url"].endswith(base64.b64encode(IMAGE_B).decode())
    assert viewed == [True, 40, "pasted.png"] and viewer_closed
    assert shown == after_reload == [["pasted.png", 40, True], ["other.png", 48, True]]
    # Kept by reference in localStorage, the bytes in IndexedDB.
    assert [[(r["name"], r["kind"], r["mime"]) for r in refs] for refs in stored] == [
        [("pasted.png", "image", "image/png")], [("other.png", "image", "image/png")]]
    assert all("data" not in r for refs in stored for r in refs)
    assert editing == [["pasted.png", 40, True]]
    # Over 3 MiB: sent as a JPEG with its long side at 2048 pixels, read by the server (it answered).
    assert resized == "large.png (resized from 2400x1000)" and large.startswith("data:image/jpeg;base64,")
    assert len(base64.b64decode(large.split(",", 1)[1])) < 3 << 20


def smooth_png(width: int, height: int) -> bytes:
    """A gradient PNG stored without compression: large as a file, small as a JPEG."""
    row = bytes(b for x in range(width) for b in (x * 255 // width, 128, 255 - x * 255 // width))
    raw = b"".join(b"\x00" + row for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 0)) + chunk(b"IEND", b""))


def test_a_sound_goes_as_input_audio(vision_pair: tuple[Path, Path], vision_server: ServerProcess, browser: DevTools,
                                     tmp_path: Path) -> None:
    projector = write_tiny_audio_projector(tmp_path / "mmproj-audio.gguf")
    with running_server(vision_server.bundle, *PAGE_SERVER_ARGS, "--mmproj", str(projector),
                        log_path=tmp_path / "log") as server:
        page = Page(browser, server.url)
        try:
            page.wait("document.querySelector('label.attach').title.startsWith('Attach sounds')")
            page.evaluate(RECORD)
            assert drop(page, file_in_page("tone.wav", wav_bytes(), "audio/wav"))
            page.wait("!!document.querySelector('#attachments audio')")
            assert drop(page, file_in_page("a.png", IMAGE_A, "image/png"))  # an image: this projector reads none
            refused = page.wait("!document.getElementById('banner').hidden && document.getElementById('banner').textContent")
            for mode, suffix in ((False, ""), (True, "-dark")):
                dark(page, mode)
                page.screenshot(tmp_path / f"sound-tray{suffix}.png", 1280, 800, mobile=False)
                page.screenshot(tmp_path / f"sound-tray-phone{suffix}.png", 390, 844, mobile=True)
            dark(page, False)
            page.send_message("what is this?")
            prompt_tokens(page, 0)
            sent = chat_requests(page)[-1]["messages"][-1]["content"]
            player = page.evaluate("!!document.querySelector('#log .media audio')")
        finally:
            page.close()
    assert refused.startswith("error: a.png: images need a model with a projector that reads them (--mmproj); this one does not")
    assert sent[1] == {"type": "input_audio", "input_audio": {"data": base64.b64encode(wav_bytes()).decode(), "format": "wav"}}
    assert player


def test_past_the_budget_a_file_is_sent_not_kept_and_a_deleted_chats_files_go(vision_server: ServerProcess,
                                                                               browser: DevTools, tmp_path: Path) -> None:
    stored = "mediaStore('readonly', store => store.count())"  # the files in IndexedDB
    page = Page(browser, vision_server.url)
    try:
        assert page.wait(f"{stored}.then(n => n === 0)")  # the page opened on no chats: every file went
        # Each file is read before the message is sent, as a user sees its thumbnail first (sent at once,
        # on a loaded machine the message left without it).
        assert drop(page, file_in_page("kept.png", IMAGE_A, "image/png"))
        page.wait(f"{THUMBNAILS.format(where='#attachments')}.length === 1")
        page.send_message("what is this?")
        prompt_tokens(page, 0)
        assert page.wait(f"{stored}.then(n => n === 1)")
        page.evaluate("document.getElementById('new-chat').click()")
        page.evaluate("mediaBytes = MEDIA_BUDGET")  # as if the browser held 100 MB of files already
        assert drop(page, file_in_page("unkept.png", IMAGE_B, "image/png"))
        page.wait(f"{THUMBNAILS.format(where='#attachments')}.length === 1")
        page.send_message("and this?")
        prompt_tokens(page, 0)
        sent_with_it = page.evaluate(f"{THUMBNAILS.format(where='#log')}.length")
        assert page.evaluate(stored) == 1
        page.reload()
        page.evaluate(RECORD)
        missing = page.wait("document.querySelector('#log .media-missing') && document.querySelector('#log .media-missing').textContent")
        assert page.evaluate(f"{THUMBNAILS.format(where='#log')}.length") == 0
        page.screenshot(tmp_path / "images-not-kept-phone.png", 390, 844, mobile=True)
        page.send_message("still there?")
        prompt_tokens(page, 1)
        resent = chat_requests(page)[-1]["messages"]
        page.evaluate("window.confirm = () => true")
        page.evaluate("[...document.querySelectorAll('#chats button')].find(b => b.textContent === 'what is this?').click()")
        page.evaluate("document.getElementById('delete').click()")
        page.reload()
        gone = page.wait(f"{stored}.then(n => n === 0)")
    finally:
        page.close()
    assert sent_with_it == 1
    assert missing == "unkept.png (not kept: past the 100 MB of files this browser keeps)"
    assert [m["content"] for m in resent if m["role"] == "user"] == ["and this?", "still there?"]  # text alone
    assert gone
