"""Emulator of Recraft's synchronous ``POST /v1/images/generations``.

Strict about what providers.md §4 and Recraft's generated client state: Bearer auth (a bad token
is a ``text/plain`` 401 ``request unauthorized``, an unknown path a ``text/plain`` 404), known
fields only, the model/style/substyle/size/format enums, ``n`` 1–6, the V3 prompt limit, and the
``controls`` shape. Answers carry real PNG/WEBP images of the requested size, as base64 or as
URLs served by the emulator. Other failures use a JSON body ``{"code", "message"}``.
"""

from __future__ import annotations

import base64
import time
import uuid
import zlib
from typing import Any

from aiohttp import web

from tests.emulators.base import Emulator, Failure, make_image

MODELS = frozenset({"recraftv3", "recraftv2", "recraft20b", "recraftv3_vector", "recraftv4", "recraftv4_1"})
STYLES = frozenset({"any", "realistic_image", "digital_illustration", "vector_illustration", "icon",
                    "logo_raster"})
SUBSTYLES = frozenset({
    "2d_art_poster", "3d", "80s", "glow", "grain", "hand_drawn", "infantile_sketch", "kawaii", "pixel_art",
    "psychedelic", "seamless", "voxel", "watercolor", "broken_line", "colored_outline", "colored_shapes",
    "colored_shapes_gradient", "doodle_fill", "doodle_offset_fill", "offset_fill", "outline",
    "outline_gradient", "uneven_fill", "70s", "cartoon", "doodle_line_art", "engraving", "flat_2",
    "line_art", "linocut", "b_and_w", "enterprise", "hard_flash", "hdr", "motion_blur", "natural_light",
    "studio_portrait", "line_circuit", "2d_art_poster_2", "engraving_color", "flat_air_art",
    "hand_drawn_outline", "handmade_3d", "stickers_drawings", "plastic", "pictogram",
})
V3_SIZES = frozenset({
    "1024x1024", "1365x1024", "1024x1365", "1536x1024", "1024x1536", "1820x1024", "1024x1820", "1024x2048",
    "2048x1024", "1434x1024", "1024x1434", "1024x1280", "1280x1024", "1024x1707", "1707x1024",
})
# recraft.ai/docs/api-reference/appendix: V4 has its own sizes and a 10000-character prompt limit.
V4_SIZES = frozenset({
    "1024x1024", "1536x768", "768x1536", "1280x832", "832x1280", "1216x896", "896x1216", "1152x896", "896x1152",
    "832x1344", "1280x896", "896x1280", "1344x768", "768x1344",
})
SIZES = {"recraftv4": V4_SIZES, "recraftv4_1": V4_SIZES}
FIELDS = frozenset({"prompt", "model", "style", "substyle", "style_id", "size", "n", "negative_prompt",
                    "random_seed", "response_format", "image_format", "controls", "text_layout", "block_nsfw",
                    "calculate_features", "expire"})
CONTROLS = frozenset({"artistic_level", "colors", "background_color", "no_text"})


class Refused(Exception):
    def __init__(self, message: str, code: str = "invalid_request", status: int = 400) -> None:
        super().__init__(message)
        self.message, self.code, self.status = message, code, status


class RecraftEmulator(Emulator):
    """Recraft's image generation, strict about the documented contract."""

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/images/generations", self._generations)]

    def error_body(self, status: int, message: str, code: str | None) -> dict[str, Any]:
        return {"code": code or "error", "message": message}

    def error_response(self, status: int, message: str, code: str | None = None,
                       headers: dict[str, str] | None = None) -> web.Response:
        # [RC-DOC error-handling]: 401 and 404 are plain text, whatever was asked.
        if status == 401:
            return web.Response(status=401, text="request unauthorized", headers=headers)
        if status == 404:
            return web.Response(status=404, text="404 page not found", headers=headers)
        return super().error_response(status, message, code, headers)

    def moderate(self, times: int = 1) -> None:
        """Refuse the next ``times`` generations the way a policy refusal would come back."""
        body = {"code": "content_moderation", "message": "Prompt was rejected by content moderation"}
        self.fail(Failure(status=400, body=body, path="/v1/images/"), times=times)

    async def _generations(self, request: web.Request) -> web.StreamResponse:
        if not self.auth_bearer(request):
            return self.error_response(401, "request unauthorized")
        body = self.recorded(request).json
        try:
            if not isinstance(body, dict):
                raise Refused("request body must be a JSON object")
            width, height, n, fmt = _validate(body)
        except Refused as exc:
            return self.error_response(exc.status, exc.message, exc.code)
        seed = zlib.crc32(body["prompt"].encode())
        images = [make_image(width, height, fmt, seed=seed + i) for i in range(n)]
        data = []
        for image in images:
            item: dict[str, Any] = {"image_id": str(uuid.uuid4())}
            if body.get("response_format") == "b64_json":
                item["b64_json"] = base64.b64encode(image).decode()
            else:
                item["url"] = self.host_bytes(image, f"image/{fmt}")
            data.append(item)
        return web.json_response({"created": int(time.time()), "credits": 40 * n, "data": data})


def _validate(body: dict[str, Any]) -> tuple[int, int, int, str]:
    for key in body:
        if key not in FIELDS:
            raise Refused(f"unknown field {key!r}", "unknown_field")
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise Refused("prompt is required", "missing_prompt")
    model = body.get("model", "recraftv3")
    if model not in MODELS:
        raise Refused(f"unknown model {model!r}", "invalid_model")
    if model.startswith(("recraftv3", "recraftv2", "recraft20b")) and len(prompt) > 1000:
        raise Refused("prompt is longer than 1000 characters", "prompt_too_long")
    if len(prompt) > 10000:
        raise Refused("prompt is longer than 10000 characters", "prompt_too_long")
    if "style" in body and body["style"] not in STYLES:
        raise Refused(f"invalid style {body['style']!r}", "invalid_style")
    if "substyle" in body:
        if body["substyle"] not in SUBSTYLES:
            raise Refused(f"invalid substyle {body['substyle']!r}", "invalid_substyle")
        if "style" not in body:
            raise Refused("substyle needs a style", "invalid_substyle")
    if "style_id" in body and ("style" in body or "substyle" in body):
        raise Refused("style_id and style are mutually exclusive", "invalid_style")
    size = body.get("size", "1024x1024")
    if size not in SIZES.get(model, V3_SIZES):
        raise Refused(f"invalid size {size!r}", "invalid_size")
    n = body.get("n", 1)
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 6:
        raise Refused("n must be an integer between 1 and 6", "invalid_n")
    if body.get("response_format", "url") not in ("url", "b64_json"):
        raise Refused("response_format must be url or b64_json", "invalid_response_format")
    fmt = body.get("image_format", "png")
    if fmt not in ("png", "webp"):
        raise Refused("image_format must be png or webp", "invalid_image_format")
    seed = body.get("random_seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise Refused("random_seed must be an integer", "invalid_seed")
    if "negative_prompt" in body and not isinstance(body["negative_prompt"], str):
        raise Refused("negative_prompt must be a string", "invalid_negative_prompt")
    _validate_controls(body.get("controls"))
    width, height = (int(side) for side in size.split("x"))
    return width, height, n, fmt


def _validate_controls(controls: Any) -> None:
    if controls is None:
        return
    if not isinstance(controls, dict) or not set(controls) <= CONTROLS:
        raise Refused("controls takes artistic_level, colors, background_color and no_text", "invalid_controls")
    level = controls.get("artistic_level")
    if level is not None and (not isinstance(level, int) or not 0 <= level <= 5):
        raise Refused("controls.artistic_level must be 0-5", "invalid_controls")
    colors = controls.get("colors", [])
    background = [controls["background_color"]] if "background_color" in controls else []
    for color in [*colors, *background]:
        rgb = color.get("rgb") if isinstance(color, dict) else None
        if not (isinstance(rgb, list) and len(rgb) == 3 and all(isinstance(c, int) and 0 <= c <= 255 for c in rgb)):
            raise Refused("colors are {\"rgb\": [r, g, b]}", "invalid_controls")
