"""Image bytes: what they are, how large, and whether they are safe to open (Pillow).

Everything here is synchronous CPU work; callers on the event loop wrap the heavier calls
(``probe`` of a large upload, ``to_format``) in ``asyncio.to_thread``. ``sniff_mime`` and
``probe_base64`` only look at headers and are cheap enough for the hot path.

Importing this module configures Pillow for the whole process: images above ``MAX_PIXELS``
are refused and Pillow's ``DecompressionBombWarning`` becomes an exception, as Pillow's own
documentation recommends for untrusted input. ``probe`` and ``check_mask`` take a lower cap for
callers' images (``limits.max_image_pixels``).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from PIL import Image

from imagegate.core.errors import InvalidRequest

# 8192 x 8192 = 64 Mpx: above every size an upstream produces or accepts (4K outputs are about
# 17 Mpx), far below what it takes to exhaust memory (64 Mpx of RGBA is 256 MB decoded).
MAX_PIXELS = 8192 * 8192
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
warnings.simplefilter("error", Image.DecompressionBombWarning)

PNG = "image/png"
JPEG = "image/jpeg"
WEBP = "image/webp"
GIF = "image/gif"
SUPPORTED: frozenset[str] = frozenset({PNG, JPEG, WEBP})

_PIL_FORMAT = {PNG: "PNG", JPEG: "JPEG", WEBP: "WEBP", GIF: "GIF"}
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
# Enough for the header of every PNG and WEBP and of most JPEGs (a JPEG's EXIF block comes
# before its size and may be up to 64 KiB). A multiple of 4 characters: whole base64 quanta.
_HEAD_BYTES = 64 * 1024
_HEAD_CHARS = (_HEAD_BYTES + 2) // 3 * 4


@dataclass(frozen=True)
class ImageInfo:
    mime: str
    width: int
    height: int
    has_alpha: bool


def sniff_mime(data: bytes) -> str | None:
    """The image type the magic bytes say (PNG, JPEG, WEBP, GIF), or None. Never a filename."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if data.startswith(b"\xff\xd8\xff"):
        return JPEG
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return WEBP
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return GIF
    return None


def probe(data: bytes, *, param: str, allowed: frozenset[str] = SUPPORTED, max_pixels: int = MAX_PIXELS) -> ImageInfo:
    """Check that ``data`` is a complete image of an allowed type, of at most ``max_pixels``
    pixels (never more than ``MAX_PIXELS``), and return its facts.

    Reads headers, not pixels, except for JPEG, which is decoded at 1/8 scale: that is the only
    way to notice a truncated JPEG, and it costs a few milliseconds."""
    mime = sniff_mime(data)
    if mime is None or mime not in allowed:
        got = f"; this file is {_PIL_FORMAT[mime]}" if mime else ""
        raise InvalidRequest(f"{param} must be a {_names(allowed)} image{got}.", param=param, code="invalid_image")
    if mime == WEBP and len(data) < int.from_bytes(data[4:8], "little") + 8:
        raise _damaged(param, mime)
    with _opened(data, mime, param, max_pixels) as im:
        info = ImageInfo(mime, im.width, im.height, _has_alpha(im))
        if mime == PNG:
            im.verify()  # walks every chunk to IEND and checks its CRC, without decompressing
        elif mime == JPEG:
            im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))
            im.load()
    return info


def check_mask(mask: bytes, first: ImageInfo, *, param: str = "mask", max_pixels: int = MAX_PIXELS) -> ImageInfo:
    """An edit mask: a PNG with an alpha channel (transparent pixels mark the area to edit), the
    same size as the first image."""
    info = probe(mask, param=param, allowed=frozenset({PNG}), max_pixels=max_pixels)
    if not info.has_alpha:
        raise InvalidRequest(
            f"{param} must have an alpha channel (RGBA, LA, or a palette with transparency): "
            "its fully transparent pixels mark the area to edit.",
            param=param,
            code="invalid_mask",
        )
    if (info.width, info.height) != (first.width, first.height):
        raise InvalidRequest(
            f"{param} is {info.width}x{info.height} but the image is {first.width}x{first.height}; "
            "they must be the same size.",
            param=param,
            code="invalid_mask",
        )
    return info


def decode_base64_image(value: str, *, param: str, max_bytes: int) -> bytes:
    """Bytes of a raw base64 string or a ``data:image/...;base64,`` URI, at most ``max_bytes``.

    The length is checked before decoding, so an oversize string is never decoded. Line breaks
    and the URL-safe alphabet are tolerated. The bytes are not checked to be an image: ``probe``
    does that."""
    encoded = value.strip()
    if encoded.startswith("data:"):
        header, comma, encoded = encoded.partition(",")
        if not comma or not header.lower().startswith("data:image/") or not header.endswith(";base64"):
            raise InvalidRequest(
                f"{param} must be raw base64 or a data:image/...;base64, URI.",
                param=param,
                code="invalid_base64",
            )
    cap = (max_bytes + 2) // 3 * 4
    if len(encoded) > cap + cap // 32:  # the slack admits line breaks every 76 characters
        raise _too_large(param, max_bytes)
    data = _b64decode(encoded)
    if not data:
        raise InvalidRequest(f"{param} is not valid base64 image data.", param=param, code="invalid_base64")
    if len(data) > max_bytes:
        raise _too_large(param, max_bytes)
    return data


def probe_base64(b64: str) -> ImageInfo | None:
    """Facts from the start of a base64 image (raw or data URI) without decoding all of it: for
    passing an upstream's base64 through to the caller. None when the head does not tell."""
    start = 0
    if b64.startswith("data:"):
        start = b64.find(",", 0, 256) + 1
        if start == 0:
            return None
    head = b64[start : start + _HEAD_CHARS]
    head = head[: len(head) // 4 * 4]
    try:
        data = base64.b64decode(head, validate=True)
    except (binascii.Error, ValueError):
        return None
    mime = sniff_mime(data)
    if mime == PNG:
        return _png_header(data)
    if mime == JPEG:
        return _jpeg_header(data)
    if mime == WEBP:
        return _webp_header(data)
    return None


def to_format(data: bytes, fmt: Literal["png", "jpeg", "webp"], *, quality: int | None = None) -> bytes:
    """Re-encode ``data``. Transparency is flattened onto white for JPEG, which has none."""
    mime = sniff_mime(data)
    if mime is None:
        raise InvalidRequest("image is not a PNG, JPEG, WEBP or GIF image.", param="image", code="invalid_image")
    with _opened(data, mime, "image", MAX_PIXELS) as im:
        out: Image.Image = im
        if fmt == "jpeg" and _has_alpha(im):
            rgba = im.convert("RGBA")
            out = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
        if fmt == "jpeg" and out.mode not in ("RGB", "L", "CMYK"):
            out = out.convert("RGB")
        buf = io.BytesIO()
        if quality is None:
            out.save(buf, format=fmt.upper())
        else:
            out.save(buf, format=fmt.upper(), quality=quality)
    return buf.getvalue()


@contextlib.contextmanager
def _opened(data: bytes, mime: str, param: str, max_pixels: int) -> Iterator[Image.Image]:
    """Open lazily with only the plugin the magic bytes named, and translate Pillow's failures.
    The header's size is checked against ``max_pixels`` before a pixel is decoded."""
    try:
        with Image.open(io.BytesIO(data), formats=[_PIL_FORMAT[mime]]) as im:
            # Pillow only refuses outright above 2 x MAX_IMAGE_PIXELS and warns below that; the
            # warning filter may have been reset by the host application, so check here too.
            if im.width * im.height > min(max_pixels, MAX_PIXELS):
                raise _too_large_pixels(param, im.width, im.height, min(max_pixels, MAX_PIXELS))
            yield im
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidRequest(
            f"{param} has more than {MAX_PIXELS} pixels.", param=param, code="image_too_large"
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # UnidentifiedImageError is an OSError
        raise _damaged(param, mime) from exc


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in _ALPHA_MODES or "transparency" in im.info


def _names(mimes: frozenset[str]) -> str:
    names = sorted(_PIL_FORMAT.get(m, m) for m in mimes)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def _damaged(param: str, mime: str) -> InvalidRequest:
    return InvalidRequest(
        f"{param} is not a readable {_PIL_FORMAT[mime]} image: the file is damaged or truncated.",
        param=param,
        code="invalid_image",
    )


def _too_large(param: str, max_bytes: int) -> InvalidRequest:
    return InvalidRequest(f"{param} is larger than {max_bytes} bytes.", param=param, code="image_too_large")


def _too_large_pixels(param: str, width: int, height: int, limit: int) -> InvalidRequest:
    return InvalidRequest(
        f"{param} is {width}x{height}, more than the {limit} pixels allowed.",
        param=param,
        code="image_too_large",
    )


def _b64decode(encoded: str) -> bytes:
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        pass
    compact = "".join(encoded.split()).replace("-", "+").replace("_", "/")
    compact += "=" * (-len(compact) % 4)
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        return b""


def _png_header(data: bytes) -> ImageInfo | None:
    # IHDR is always first: length, "IHDR", width, height, bit depth, colour type.
    if len(data) < 33 or data[12:16] != b"IHDR":
        return None
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[25] in (4, 6):  # grey + alpha, RGBA
        return ImageInfo(PNG, width, height, True)
    pos = 33
    while pos + 8 <= len(data):  # a tRNS chunk, if any, comes before the first IDAT
        kind = data[pos + 4 : pos + 8]
        if kind in (b"tRNS", b"IDAT"):
            return ImageInfo(PNG, width, height, kind == b"tRNS")
        pos += 12 + int.from_bytes(data[pos : pos + 4], "big")
    return None


_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_header(data: bytes) -> ImageInfo | None:
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _SOF_MARKERS:
            if pos + 9 > len(data):
                return None
            height, width = (
                int.from_bytes(data[pos + 5 : pos + 7], "big"),
                int.from_bytes(data[pos + 7 : pos + 9], "big"),
            )
            return ImageInfo(JPEG, width, height, False)
        if marker == 0xDA:  # start of scan before any frame header: not a JPEG we can read
            return None
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return None


def _webp_header(data: bytes) -> ImageInfo | None:
    if len(data) < 30:
        return None
    chunk = data[12:16]
    if chunk == b"VP8X":  # extended: flags, then 24-bit canvas width-1 and height-1
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return ImageInfo(WEBP, width, height, bool(data[20] & 0x10))
    if chunk == b"VP8L" and data[20] == 0x2F:  # lossless: 14-bit width-1, height-1, alpha bit
        bits = int.from_bytes(data[21:25], "little")
        return ImageInfo(WEBP, (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, bool(bits >> 28 & 1))
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":  # lossy, no alpha
        width = int.from_bytes(data[26:28], "little") & 0x3FFF
        height = int.from_bytes(data[28:30], "little") & 0x3FFF
        return ImageInfo(WEBP, width, height, False)
    return None
