from __future__ import annotations

import base64
import io
import os
import struct
import warnings
import zlib

import pytest
from PIL import Image

from imagegate.core.errors import InvalidRequest
from imagegate.imaging import (
    GIF,
    JPEG,
    MAX_PIXELS,
    PNG,
    WEBP,
    ImageInfo,
    check_mask,
    decode_base64_image,
    probe,
    probe_base64,
    sniff_mime,
    to_format,
)


def make(fmt: str, mode: str = "RGB", size: tuple[int, int] = (64, 48), **save: object) -> bytes:
    color: int | tuple[int, ...] = 0 if mode in ("P", "L", "1") else (10, 20, 30, 128)[: len(mode)]
    im = Image.new(mode, size, color)
    buf = io.BytesIO()
    im.save(buf, fmt, **save)
    return buf.getvalue()


def noisy(fmt: str, size: tuple[int, int], mode: str = "RGB", **save: object) -> bytes:
    im = Image.frombytes(mode, size, os.urandom(size[0] * size[1] * len(mode)))
    buf = io.BytesIO()
    im.save(buf, fmt, **save)
    return buf.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width`` x ``height`` (a decompression bomb's shape)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (width + 1) * 4)  # a few rows of zeros; the rest is "missing"
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class _Raises:
    """``with invalid("code"):`` - asserts an InvalidRequest with that code and param."""

    def __init__(self, code: str, param: str) -> None:
        self.code, self.param = code, param
        self.error: InvalidRequest | None = None

    def __enter__(self) -> _Raises:
        return self

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> bool:
        assert isinstance(exc, InvalidRequest), f"expected InvalidRequest, got {exc!r}"
        assert (exc.code, exc.param) == (self.code, self.param), exc.message
        self.error = exc
        return True


def invalid(code: str, param: str = "image") -> _Raises:
    return _Raises(code, param)


# --- sniffing and probing -------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "mime"), [("PNG", PNG), ("JPEG", JPEG), ("WEBP", WEBP), ("GIF", GIF)])
def test_sniff_mime(fmt: str, mime: str) -> None:
    assert sniff_mime(make(fmt)) == mime


def test_sniff_mime_unknown() -> None:
    assert sniff_mime(b"hello, I am a text file") is None
    assert sniff_mime(b"") is None


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (make("PNG", "RGB", (64, 48)), ImageInfo(PNG, 64, 48, False)),
        (make("PNG", "RGBA", (64, 48)), ImageInfo(PNG, 64, 48, True)),
        (make("PNG", "LA", (10, 20)), ImageInfo(PNG, 10, 20, True)),
        (make("PNG", "P", (10, 20), transparency=0), ImageInfo(PNG, 10, 20, True)),
        (make("JPEG", "RGB", (33, 17)), ImageInfo(JPEG, 33, 17, False)),
        (make("WEBP", "RGB", (64, 48)), ImageInfo(WEBP, 64, 48, False)),
        (make("WEBP", "RGBA", (64, 48)), ImageInfo(WEBP, 64, 48, True)),
    ],
)
def test_probe(data: bytes, expected: ImageInfo) -> None:
    assert probe(data, param="image") == expected


def test_text_file_named_png_refused() -> None:
    with invalid("invalid_image") as raised:
        probe(b"this is not an image, whatever its name says\n", param="image")
    assert raised.error is not None and "PNG" in raised.error.message


def test_gif_not_allowed_by_default() -> None:
    with invalid("invalid_image") as raised:
        probe(make("GIF"), param="image")
    assert raised.error is not None and "GIF" in raised.error.message
    assert probe(make("GIF"), param="image", allowed=frozenset({GIF})).mime == GIF


@pytest.mark.parametrize(
    "data",
    [
        noisy("PNG", (64, 64))[:-20],
        noisy("PNG", (64, 64))[:400],
        noisy("JPEG", (64, 64))[:-200],
        noisy("WEBP", (64, 64))[:-50],
        b"\x89PNG\r\n\x1a\n" + os.urandom(200),
        b"\xff\xd8\xff" + os.urandom(200),
    ],
    ids=["png-tail", "png-half", "jpeg-tail", "webp-tail", "png-garbage", "jpeg-garbage"],
)
def test_damaged_or_truncated(data: bytes) -> None:
    with invalid("invalid_image"):
        probe(data, param="image")


@pytest.mark.parametrize("size", [(30000, 30000), (9000, 9000)], ids=["above-2x", "between-1x-2x"])
def test_decompression_bomb(size: tuple[int, int]) -> None:
    bomb = png_declaring(*size)
    assert len(bomb) < 2000 and size[0] * size[1] > MAX_PIXELS
    with invalid("image_too_large"):
        probe(bomb, param="image")


def test_decompression_bomb_refused_even_if_warnings_are_ignored() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with invalid("image_too_large", "image[1]"):
            probe(png_declaring(9000, 9000), param="image[1]")


def test_exactly_at_the_cap_is_accepted() -> None:
    assert probe(png_declaring(8192, 8192), param="image") == ImageInfo(PNG, 8192, 8192, False)


# --- masks ----------------------------------------------------------------------------------


def test_mask_ok() -> None:
    first = probe(make("JPEG", "RGB", (64, 48)), param="image")
    assert check_mask(make("PNG", "RGBA", (64, 48)), first).has_alpha
    assert check_mask(make("PNG", "LA", (64, 48)), first).has_alpha
    assert check_mask(make("PNG", "P", (64, 48), transparency=0), first).has_alpha


def test_mask_wrong_size() -> None:
    first = probe(make("PNG", "RGB", (64, 48)), param="image")
    with invalid("invalid_mask", "mask") as raised:
        check_mask(make("PNG", "RGBA", (48, 64)), first)
    assert raised.error is not None and "48x64" in raised.error.message and "64x48" in raised.error.message


def test_mask_without_alpha() -> None:
    first = probe(make("PNG", "RGB", (64, 48)), param="image")
    with invalid("invalid_mask", "mask") as raised:
        check_mask(make("PNG", "RGB", (64, 48)), first)
    assert raised.error is not None and "alpha" in raised.error.message


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_mask_must_be_png(fmt: str) -> None:
    first = probe(make("PNG", "RGB", (64, 48)), param="image")
    with invalid("invalid_image", "mask") as raised:
        check_mask(make(fmt, "RGBA" if fmt == "WEBP" else "RGB", (64, 48)), first)
    assert raised.error is not None and "PNG" in raised.error.message


# --- base64 ---------------------------------------------------------------------------------


def test_decode_raw_and_data_uri() -> None:
    png = make("PNG")
    assert decode_base64_image(b64(png), param="image", max_bytes=10_000) == png
    assert decode_base64_image(f"data:image/png;base64,{b64(png)}", param="image", max_bytes=10_000) == png


def test_decode_tolerates_line_breaks_and_urlsafe_alphabet() -> None:
    data = os.urandom(3000)
    wrapped = base64.encodebytes(data).decode()  # 76-character lines
    assert decode_base64_image(wrapped, param="image", max_bytes=3000) == data
    urlsafe = base64.urlsafe_b64encode(data).decode().rstrip("=")
    assert decode_base64_image(urlsafe, param="image", max_bytes=3000) == data


@pytest.mark.parametrize(
    "value",
    ["not base64 at all!", "", "data:text/plain;base64,aGVsbG8=", "data:image/png,rawbytes", "data:image/png"],
)
def test_decode_garbage(value: str) -> None:
    with invalid("invalid_base64"):
        decode_base64_image(value, param="image", max_bytes=10_000)


def test_decode_oversize() -> None:
    with invalid("image_too_large"):
        decode_base64_image(b64(os.urandom(3001)), param="image", max_bytes=3000)
    # Refused by length alone: this string is not even base64, so decoding it would fail otherwise.
    with invalid("image_too_large"):
        decode_base64_image("!" * 10_000_000, param="image", max_bytes=1_000_000)


# --- probe_base64 ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        make("PNG", "RGB", (640, 480)),
        make("PNG", "RGBA", (640, 480)),
        make("PNG", "P", (64, 48), transparency=0),
        make("PNG", "P", (64, 48)),
        make("JPEG", "RGB", (640, 480)),
        make("JPEG", "L", (31, 7)),
        make("JPEG", "RGB", (640, 480), progressive=True),
        make("WEBP", "RGB", (640, 480)),
        make("WEBP", "RGBA", (640, 480)),
        make("WEBP", "RGB", (641, 479), lossless=True),
        make("WEBP", "RGBA", (641, 479), lossless=True),
    ],
    ids=[
        "png",
        "png-rgba",
        "png-trns",
        "png-p",
        "jpeg",
        "jpeg-grey",
        "jpeg-progressive",
        "webp",
        "webp-alpha",
        "webp-lossless",
        "webp-lossless-alpha",
    ],
)
def test_probe_base64_agrees_with_probe(data: bytes) -> None:
    assert probe_base64(b64(data)) == probe(data, param="image")
    assert probe_base64(f"data:image/x;base64,{b64(data)}") == probe(data, param="image")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_probe_base64_reads_only_the_head(fmt: str) -> None:
    data = noisy(fmt, (700, 500))
    assert len(data) > 200_000
    encoded = b64(data)
    head_only = encoded[:100_000] + "!!! not base64 beyond the head !!!"
    info = probe_base64(head_only)
    assert info is not None and (info.width, info.height) == (700, 500)


def test_probe_base64_jpeg_with_large_exif() -> None:
    im = Image.new("RGB", (320, 200))
    exif = Image.Exif()
    exif[0x010E] = "x" * 60_000  # ImageDescription
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif)
    assert probe_base64(b64(buf.getvalue())) == ImageInfo(JPEG, 320, 200, False)


@pytest.mark.parametrize("value", ["", "!!!!", b64(b"plain text, no image"), b64(make("GIF")), "data:image/png"])
def test_probe_base64_undeterminable(value: str) -> None:
    assert probe_base64(value) is None


# --- to_format ------------------------------------------------------------------------------


def test_to_format_round_trips() -> None:
    rgba = make("PNG", "RGBA", (32, 16))
    jpeg = to_format(rgba, "jpeg", quality=80)
    assert probe(jpeg, param="image") == ImageInfo(JPEG, 32, 16, False)
    with Image.open(io.BytesIO(jpeg)) as im:  # half-transparent pixels flattened onto white
        red, _, _ = im.convert("RGB").getpixel((5, 5))  # type: ignore[misc]
        assert red > 100
    assert probe(to_format(rgba, "webp"), param="image") == ImageInfo(WEBP, 32, 16, True)
    assert probe(to_format(jpeg, "png"), param="image") == ImageInfo(PNG, 32, 16, False)


def test_to_format_refuses_non_images() -> None:
    with invalid("invalid_image"):
        to_format(b"nope", "png")
