"""What an image or a sound is, read from its header before anything decodes it.

libmtmd decodes images with stb_image and sounds with miniaudio, from memory, trusting their headers: a
16-byte PNG header that claims 100000 x 100000 pixels makes stb_image allocate 30 GB, and a WAV or FLAC
header that claims hours of samples makes miniaudio allocate for all of them. So every file is checked
here first, in plain Python, in time and memory bounded by its size: its format is one libmtmd reads,
its declared size is within bounds, it is not cut short, and it is what its label says. Anything else is
a `MediaProblem` naming what is wrong (the server's 400).

Accepted: PNG, JPEG, GIF and BMP images up to MAX_PIXELS; WAV, MP3 and FLAC sounds up to MAX_SECONDS.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

MAX_PIXELS = 4096 * 4096  # ~50 MB of RGB once decoded
MAX_SECONDS = 600
IMAGE_FORMATS = ("png", "jpeg", "gif", "bmp")
AUDIO_FORMATS = ("wav", "mp3", "flac")
# A label's subtype, as clients write it, to our format name.
LABELS = {"png": "png", "jpeg": "jpeg", "jpg": "jpeg", "pjpeg": "jpeg", "gif": "gif", "bmp": "bmp", "x-bmp": "bmp",
          "wav": "wav", "x-wav": "wav", "wave": "wav", "vnd.wave": "wav", "mp3": "mp3", "mpeg": "mp3",
          "flac": "flac", "x-flac": "flac"}
ACCEPTED = "PNG, JPEG, GIF or BMP images, WAV, MP3 or FLAC sounds"


class MediaProblem(ValueError):
    """Why a file is refused, in words for the client."""


@dataclass(frozen=True)
class MediaInfo:
    kind: str  # "image" | "audio"
    format: str
    width: int = 0
    height: int = 0
    seconds: float = 0.0


def inspect(data: bytes, label: str | None = None) -> MediaInfo:
    """The file's kind and format, or MediaProblem. `label`: its declared MIME type (image/png), if any."""
    if not data:
        raise MediaProblem("the file is empty (zero bytes)")
    fmt = sniff(data)
    if fmt is None:
        raise MediaProblem(f"not a format this server reads (it takes {ACCEPTED})")
    info = _READERS[fmt](data)
    if label:
        family, _, subtype = label.lower().partition("/")
        kind = "image" if fmt in IMAGE_FORMATS else "audio"
        declared = LABELS.get(subtype.split(";")[0].strip())
        if family in ("image", "audio") and (family != kind or (declared is not None and declared != fmt)):
            raise MediaProblem(f"labelled {label}, but the data is a {fmt.upper()} {kind}")
    return info


def sniff(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if data.startswith(b"BM"):
        return "bmp"
    if data.startswith(b"RIFF") and data[8:12] == b"WAVE":
        return "wav"
    if data.startswith(b"fLaC"):
        return "flac"
    if data.startswith(b"ID3") or (len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0):
        return "mp3"
    return None


def _image(fmt: str, width: int, height: int) -> MediaInfo:
    if width <= 0 or height <= 0:
        raise MediaProblem(f"the {fmt.upper()} header declares an empty image ({width} x {height})")
    if width * height > MAX_PIXELS:
        raise MediaProblem(f"the image is {width} x {height} pixels, more than this server decodes "
                           f"({MAX_PIXELS // 1_000_000} megapixels at most)")
    return MediaInfo("image", fmt, width, height)


def _truncated(fmt: str) -> MediaProblem:
    return MediaProblem(f"the {fmt.upper()} file is cut short (truncated)")


def _png(data: bytes) -> MediaInfo:
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise _truncated("png")
    width, height = struct.unpack(">II", data[16:24])
    info = _image("png", width, height)
    position, seen_data = 8, False
    while position + 8 <= len(data):  # the chunks: each within the file, IDAT present, IEND last
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        position += 12 + length
        if position > len(data):
            break
        if kind == b"IDAT":
            seen_data = True
        if kind == b"IEND":
            if not seen_data:
                raise MediaProblem("the PNG file has no image data")
            return info
    raise _truncated("png")


def _jpeg(data: bytes) -> MediaInfo:
    position, size = 2, None
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            raise MediaProblem("the JPEG file is damaged (a marker is missing)")
        marker = data[position + 1]
        if marker == 0xFF:
            position += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            position += 2
            continue
        (length,) = struct.unpack(">H", data[position + 2:position + 4])
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            if position + 9 > len(data):
                break
            height, width = struct.unpack(">HH", data[position + 5:position + 9])
            size = (width, height)
        if marker == 0xDA:  # start of scan: the entropy-coded data runs to the end-of-image marker
            if size is None:
                raise MediaProblem("the JPEG file declares no image size before its data")
            if b"\xff\xd9" not in data[-64:] and not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
                raise _truncated("jpeg")
            return _image("jpeg", *size)
        position += 2 + length
    raise _truncated("jpeg")


def _gif(data: bytes) -> MediaInfo:
    if len(data) < 14:
        raise _truncated("gif")
    width, height = struct.unpack("<HH", data[6:10])
    info = _image("gif", width, height)
    if not data.rstrip(b"\x00").endswith(b";"):
        raise _truncated("gif")
    return info


def _bmp(data: bytes) -> MediaInfo:
    if len(data) < 26:
        raise _truncated("bmp")
    (header_size,) = struct.unpack("<I", data[14:18])
    if header_size == 12:
        width, height = struct.unpack("<HH", data[18:22])
    else:
        width, height = struct.unpack("<ii", data[18:26])
    info = _image("bmp", width, abs(height))
    (offset,) = struct.unpack("<I", data[10:14])
    if offset >= len(data):
        raise _truncated("bmp")
    return info


def _audio(fmt: str, seconds: float) -> MediaInfo:
    if seconds > MAX_SECONDS:
        raise MediaProblem(f"the sound is {seconds:.0f} s long, more than this server decodes ({MAX_SECONDS} s at most)")
    return MediaInfo("audio", fmt, seconds=seconds)


def _wav(data: bytes) -> MediaInfo:
    position, byte_rate = 12, 0
    while position + 8 <= len(data):
        kind, length = struct.unpack("<4sI", data[position:position + 8])
        body = position + 8
        if kind == b"fmt ":
            if length < 16 or body + 16 > len(data):
                raise _truncated("wav")
            channels, rate, byte_rate = struct.unpack("<HII", data[body + 2:body + 12])
            if not channels or not rate or not byte_rate:
                raise MediaProblem("the WAV header declares no channels or no sample rate")
        if kind == b"data":
            if not byte_rate:
                raise MediaProblem("the WAV file has no format header before its data")
            if length == 0:
                raise MediaProblem("the WAV file holds no samples")
            if body + length > len(data):
                raise _truncated("wav")
            return _audio("wav", length / byte_rate)
        position = body + length + (length & 1)
    raise _truncated("wav")


def _flac(data: bytes) -> MediaInfo:
    if len(data) < 42 or data[4] & 0x7F != 0:
        raise _truncated("flac")
    fields = int.from_bytes(data[18:26], "big")
    rate, total = fields >> 44, fields & ((1 << 36) - 1)
    if not rate:
        raise MediaProblem("the FLAC header declares no sample rate")
    return _audio("flac", total / rate)


def _mp3(data: bytes) -> MediaInfo:
    # Decoding time and memory follow the frames really present (miniaudio counts them): bounded by the size.
    return MediaInfo("audio", "mp3")


_READERS = {"png": _png, "jpeg": _jpeg, "gif": _gif, "bmp": _bmp, "wav": _wav, "flac": _flac, "mp3": _mp3}
