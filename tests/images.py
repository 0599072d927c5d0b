"""Reading the images a gateway answered with, for assertions."""

from __future__ import annotations

import base64
import io

import httpx2 as httpx
import openai
from PIL import Image


def fetch_image(url: str) -> Image.Image:
    """GET an image URL (a gateway's signed /files/ URL) and open it."""
    r = httpx.get(url)
    assert r.status_code == 200, r.text
    return Image.open(io.BytesIO(r.content))


def decode_image(b64: str | None) -> Image.Image:
    assert b64, "no b64_json in the answer"
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def image_of(item: openai.types.Image) -> Image.Image:
    """The picture of one ``data`` item, whichever response format it came in."""
    if item.b64_json:
        return decode_image(item.b64_json)
    assert item.url, "neither url nor b64_json in the answer"
    return fetch_image(item.url)
