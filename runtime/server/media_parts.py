"""Images and sounds in a chat request, as llama-server takes them (server-common.cpp
`oaicompat_content_load_media`): every `image_url` and `input_audio` content part is decoded from its
base64 `data:` URL, checked (runtime/engine/media_check.py), and replaced by a text part holding the projector's marker;
the rendered prompt then goes to libmtmd with the files in marker order (runtime/engine/multimodal.py).
The other dialects (Responses, Anthropic, Ollama) turn their image blocks into `image_url` parts first.

Remote `http(s)` URLs are never fetched: a local server that fetched what a request names would be a door
into its user's network (any page or document the model reads could name an intranet address)."""

from __future__ import annotations

import base64
import binascii
import dataclasses
from typing import Any

from ..engine.types import GenerationRequest
from ..formats.chat_template import tokenize_prompt_text
from .errors import ApiError
from .schemas import ChatCompletionRequest, ContentPart

MEDIA_PARTS = ("image_url", "input_audio")
REMOTE_REFUSED = ("{param}: remote URLs are not fetched by this server (it would reach into its user's network "
                  "for whoever writes the request): send the file inline, as a base64 data: URL "
                  "(data:image/png;base64,...)")
NO_PROJECTOR = ("{param}: {what} are not supported: this model reads only text (it has no projector: llmpack build "
                "--mmproj FILE, or run it with --mmproj FILE)")
NO_AUDIO = "{param}: this model's projector reads images only, not sound"
NO_IMAGES = "{param}: this model's projector reads sound only, not images"
BAD_URL = "{param}: not a base64 data: URL of an image or a sound (data:image/png;base64,...)"
BAD_BASE64 = "{param}: the base64 data does not decode ({reason})"
BAD_FILE = "{param}: {problem}"


def _refuse(template: str, param: str, **values: Any) -> ApiError:
    return ApiError(400, template.format(param=param, **values), param=param)


def has_media(body: ChatCompletionRequest) -> bool:
    return any(isinstance(m.content, list) and any(p.type in MEDIA_PARTS for p in m.content) for m in body.messages)


def extract(body: ChatCompletionRequest, projector: Any) -> tuple[ChatCompletionRequest, list[bytes]]:
    """The body with each media part replaced by a marker text part, and the files in order. ApiError 400
    for anything refused, naming the part."""
    if not has_media(body):
        return body, []
    files: list[bytes] = []
    new_messages = []
    for i, message in enumerate(body.messages):
        if not isinstance(message.content, list):
            new_messages.append(message)
            continue
        parts = []
        for j, part in enumerate(message.content):
            if part.type not in MEDIA_PARTS:
                parts.append(part)
                continue
            param = f"messages.{i}.content.{j}"
            if projector is None:
                raise _refuse(NO_PROJECTOR, param, what="images" if part.type == "image_url" else "sounds")
            data, label = _decode(part, param)
            from ..engine.media_check import MediaProblem, inspect  # pure Python; imported when a file comes

            try:
                info = inspect(data, label)
            except MediaProblem as exc:
                raise _refuse(BAD_FILE, param, problem=exc) from None
            if info.kind == "audio" and not projector.audio:
                raise _refuse(NO_AUDIO, param)
            if info.kind == "image" and not projector.vision:
                raise _refuse(NO_IMAGES, param)
            files.append(data)
            parts.append(ContentPart(type="text", text=projector.marker))
        new_messages.append(message.model_copy(update={"content": parts}))
    return body.model_copy(update={"messages": new_messages}), files


def _decode(part: ContentPart, param: str) -> tuple[bytes, str | None]:
    extra = part.model_extra or {}
    if part.type == "image_url":
        value = extra.get("image_url")
        url = value.get("url") if isinstance(value, dict) else value
    else:
        value = extra.get("input_audio")
        if not isinstance(value, dict):
            raise _refuse(BAD_URL, param)
        url = value.get("data") if value.get("data") is not None else value.get("url")
        if isinstance(url, str) and not url.startswith(("data:", "http:", "https:")):
            fmt = str(value.get("format") or "wav")
            url = f"data:audio/{fmt};base64,{url}"  # OpenAI's input_audio: bare base64 with a format
    if not isinstance(url, str):
        raise _refuse(BAD_URL, param)
    if url.lower().startswith(("http://", "https://")):
        raise _refuse(REMOTE_REFUSED, param)
    header, comma, payload = url.partition(",")
    if not (url.startswith("data:") and comma and header.endswith(";base64")):
        raise _refuse(BAD_URL, param)
    label = header[5:-7]
    if not label.startswith(("image/", "audio/")):
        raise _refuse(BAD_URL, param)
    try:
        data = base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _refuse(BAD_BASE64, param, reason=exc) from None
    return data, label


def _tokenize(engine: Any, text: str, files: list[bytes]) -> tuple[list[int], Any]:
    from ..engine.multimodal import MediaRejected  # loaded with the engine already: a file came

    try:
        return engine.tokenize_media(text, files, *tokenize_prompt_text(text, engine.bos_token))
    except MediaRejected as exc:
        raise ApiError(400, str(exc), param="messages") from None


def attach(engine: Any, request: GenerationRequest, text: str, files: list[bytes]) -> GenerationRequest:
    """The request's prompt tokenized again with its files (libmtmd), checked against the context."""
    ids, prompt = _tokenize(engine, text, files)
    engine.check_fits(len(ids))
    return dataclasses.replace(request, prompt_tokens=tuple(ids), media=prompt)


def count(engine: Any, text: str, files: list[bytes]) -> int:
    """The prompt's tokens with its images and sounds (what usage will say), for the token-count routes."""
    ids, prompt = _tokenize(engine, text, files)
    prompt.free()
    return len(ids)
