"""Emulator of the OpenAI Images API: image generations and edits (plus `GET /v1/models`).

Every request body is checked in three steps, and the first violation is refused with a 400 in
OpenAI's error shape naming the field:

1. no parameter outside the spec's schema (the real API answers `unknown_parameter`);
2. the schema of the official OpenAPI spec (`CreateImageRequest`, `CreateImageEditRequest` for
   multipart, `EditImageBodyJsonParam` for JSON edits), as written down in `openai_schemas.py`;
3. the per-model rules the spec states only in prose (sizes, qualities, prompt length, `n` for
   dall-e-3, GPT-only and dall-e-only parameters, the input images and the mask of an edit).

Answers carry real images of the requested size and format.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import io
import json
import re
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from jsonschema.exceptions import ValidationError, best_match
from openapi_schema_validator import OAS31Validator
from PIL import Image, UnidentifiedImageError

from tests.emulators.base import Emulator, Failure, UploadedFile, make_image
from tests.emulators.openai_schemas import SCHEMAS

_MB = 1024**2


@dataclass(frozen=True)
class ImageModel:
    """What one model accepts, as the spec's prose states it."""

    name: str
    sizes: tuple[str, ...]
    qualities: tuple[str, ...]
    max_prompt: int
    gpt: bool = True  # GPT image model: base64 only, usage, output_format/background/moderation/stream
    max_n: int = 10
    generations: bool = True
    edits: bool = True
    custom_sizes: bool = False  # any WxH within the limits below (gpt-image-2's by default)
    input_fidelity: bool = True
    multiple_of: int = 16
    max_ratio: float = 3
    max_side: int = 3840
    max_pixels: int = 3840 * 2160
    min_pixels: int = 0  # the spec states no floor


_GPT_SIZES = ("auto", "1024x1024", "1536x1024", "1024x1536")
_GPT_QUALITIES = ("auto", "low", "medium", "high")
MODELS: dict[str, ImageModel] = {
    model.name: model
    for model in (
        ImageModel("dall-e-2", ("256x256", "512x512", "1024x1024"), ("auto", "standard"), 1000, gpt=False),
        ImageModel(
            "dall-e-3",
            ("1024x1024", "1792x1024", "1024x1792"),
            ("auto", "standard", "hd"),
            4000,
            gpt=False,
            max_n=1,
            edits=False,
        ),
        ImageModel("gpt-image-1", _GPT_SIZES, _GPT_QUALITIES, 32000),
        ImageModel("gpt-image-1-mini", _GPT_SIZES, _GPT_QUALITIES, 32000, input_fidelity=False),
        ImageModel("gpt-image-1.5", _GPT_SIZES, _GPT_QUALITIES, 32000),
        ImageModel("gpt-image-2", _GPT_SIZES, _GPT_QUALITIES, 32000, custom_sizes=True),
        ImageModel("gpt-image-2-2026-04-21", _GPT_SIZES, _GPT_QUALITIES, 32000, custom_sizes=True),
        # The spec lists it among edit models only.
        ImageModel("chatgpt-image-latest", _GPT_SIZES, _GPT_QUALITIES, 32000, generations=False),
    )
}
_GPT_ONLY = ("output_format", "output_compression", "background", "moderation", "stream", "partial_images")
_FORM_INTEGERS = {"n", "output_compression", "partial_images"}
_FORM_BOOLEANS = {"stream"}
# Output image tokens of one 1024x1024 image per quality (OpenAI's gpt-image-1 pricing table).
_TOKENS_PER_MEGAPIXEL = {"low": 272, "medium": 1056, "high": 4160}
_INPUT_IMAGE_TOKENS = 323


class ApiError(Exception):
    """A refusal, rendered in OpenAI's error shape."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None, status: int = 400):
        super().__init__(message)
        self.message, self.param, self.code, self.status = message, param, code, status


# -- the spec ------------------------------------------------------------------------------------


def spec_schemas() -> dict[str, Any]:
    """The spec's `components/schemas` the emulators use, written from its facts (`openai_schemas.py`)."""
    return SCHEMAS


@functools.cache
def schema_validator(schema_name: str) -> OAS31Validator:
    """A validator of one `components/schemas` entry, `$ref`s resolvable."""
    schemas = spec_schemas()
    return OAS31Validator({"$ref": f"#/components/schemas/{schema_name}", "components": {"schemas": schemas}})


def validate(body: dict[str, Any], schema_name: str) -> None:
    """Refuse parameters the schema does not know, then anything the schema forbids."""
    known = spec_schemas()[schema_name]["properties"]
    for key in body:
        if key not in known:
            raise ApiError(f"Unknown parameter: '{key}'.", key, "unknown_parameter")
    error = best_match(schema_validator(schema_name).iter_errors(body))
    if error is not None:
        raise _schema_error(error)


def _schema_error(error: ValidationError) -> ApiError:
    param = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".")
    value, limit = error.instance, error.validator_value
    validator = error.validator
    if validator == "anyOf" and all(branch.validator == "type" for branch in error.context or ()):
        # e.g. `n: "2"` against `anyOf: [integer, null]`: best_match stops at the anyOf.
        validator, limit = "type", " or ".join(str(branch.validator_value) for branch in error.context or ())
    match validator:
        case "required":
            missing = next(name for name in limit if name not in value)
            param = f"{param}.{missing}" if param else missing
            return ApiError(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")
        case "enum":
            supported = ", ".join(repr(v) for v in limit)
            return ApiError(f"Invalid value: {value!r}. Supported values are: {supported}.", param, "invalid_value")
        case "type":
            got = type(value).__name__
            return ApiError(f"Invalid type for '{param}': expected {limit}, but got {got}.", param, "invalid_type")
        case "maximum" | "minimum":
            above = validator == "maximum"
            return ApiError(
                f"Invalid '{param}': integer {'above maximum' if above else 'below minimum'} value. "
                f"Expected a value {'<=' if above else '>='} {limit}, but got {value} instead.",
                param,
                "integer_above_max_value" if above else "integer_below_min_value",
            )
        case "maxItems" | "minItems" | "maxLength" | "minLength" as rule:
            kind = "array" if rule.endswith("Items") else "string"
            bound = "above_max" if rule.startswith("max") else "below_min"
            return ApiError(f"Invalid '{param}': {error.message}.", param, f"{kind}_{bound}_length")
    return ApiError(f"Invalid '{param}': {error.message}.", param or None, "invalid_value")


# -- the request, resolved against the model's rules ---------------------------------------------


@dataclass(frozen=True)
class ImageJob:
    """A valid request: what to render and how to answer."""

    model: ImageModel
    prompt: str
    n: int
    size: str  # as requested ("auto" allowed)
    width: int
    height: int
    quality: str  # as requested ("auto" allowed)
    output_format: str
    background: str
    response_format: str
    stream: bool
    partial_images: int
    input_images: int = 0


def resolve(
    body: dict[str, Any], endpoint: str, input_images: int = 0, models: dict[str, ImageModel] | None = None
) -> ImageJob:
    """Apply the per-model rules the spec states in prose to a schema-valid body."""
    model = _model(body, endpoint, MODELS if models is None else models)
    prompt: str = body["prompt"]
    if len(prompt) > model.max_prompt:
        raise ApiError(
            f"Invalid 'prompt': string too long. Expected a string with maximum length {model.max_prompt}, "
            f"but got a string with length {len(prompt)} instead.",
            "prompt",
            "string_above_max_length",
        )
    for key in _GPT_ONLY if not model.gpt else ("response_format",):
        _refuse_if_sent(body, key, model)
    if model.name != "dall-e-3":
        _refuse_if_sent(body, "style", model)
    if not model.input_fidelity:
        _refuse_if_sent(body, "input_fidelity", model)
    n = _get(body, "n", 1)
    if n > model.max_n:
        raise ApiError(f"Invalid 'n': {model.name} supports only n={model.max_n}.", "n", "integer_above_max_value")
    size = _get(body, "size", "auto" if model.gpt else "1024x1024")
    width, height = _dimensions(size, model)
    quality = _get(body, "quality", "auto")
    if quality not in model.qualities:
        raise _unsupported_value("quality", quality, model, model.qualities)
    output_format = _get(body, "output_format", "png")
    compression = _get(body, "output_compression", 100)
    if not 0 <= compression <= 100:
        raise ApiError("Invalid 'output_compression': expected a value between 0 and 100.", "output_compression")
    if compression != 100 and output_format == "png":
        raise ApiError("'output_compression' is only supported with jpeg and webp.", "output_compression")
    background = _get(body, "background", "auto")
    if background == "transparent" and output_format == "jpeg":
        raise ApiError("Transparent background needs output_format png or webp.", "background", "invalid_value")
    return ImageJob(
        model=model,
        prompt=prompt,
        n=n,
        size=size,
        width=width,
        height=height,
        quality=quality,
        output_format=output_format,
        background=background,
        response_format=_get(body, "response_format", "url"),
        stream=_get(body, "stream", False),
        partial_images=_get(body, "partial_images", 0),
        input_images=input_images,
    )


def _model(body: dict[str, Any], endpoint: str, models: dict[str, ImageModel]) -> ImageModel:
    name = body.get("model")
    if name is None and endpoint == "edits":
        name = "gpt-image-1.5"
    elif name is None:
        # "Defaults to dall-e-2 unless a parameter specific to the GPT image models is used."
        name = "gpt-image-1.5" if any(body.get(key) is not None for key in _GPT_ONLY) else "dall-e-2"
    model = models.get(name)
    if model is None or not (model.edits if endpoint == "edits" else model.generations):
        supported = [m.name for m in models.values() if (m.edits if endpoint == "edits" else m.generations)]
        raise _unsupported_value("model", name, None, supported)
    return model


def _get(body: dict[str, Any], key: str, default: Any) -> Any:
    value = body.get(key)
    return default if value is None else value


def _refuse_if_sent(body: dict[str, Any], key: str, model: ImageModel) -> None:
    if body.get(key) not in (None, False):  # `stream: false` asks for what every model does
        raise ApiError(
            f"Unsupported parameter: '{key}' is not supported with {model.name}.",
            key,
            "unsupported_parameter",
        )


def _unsupported_value(param: str, value: Any, model: ImageModel | None, supported: Any) -> ApiError:
    where = f" for {model.name}" if model else ""
    listed = ", ".join(repr(v) for v in supported)
    return ApiError(f"Invalid value: {value!r}. Supported values{where} are: {listed}.", param, "invalid_value")


def _dimensions(size: str, model: ImageModel) -> tuple[int, int]:
    if size == "auto" and "auto" in model.sizes:
        return 1024, 1024
    match = re.fullmatch(r"([1-9]\d*)x([1-9]\d*)", size)
    if match:
        width, height = int(match[1]), int(match[2])
        if size in model.sizes or (model.custom_sizes and _custom_size_ok(width, height, model)):
            return width, height
    raise _unsupported_value("size", size, model, model.sizes)


def _custom_size_ok(width: int, height: int, model: ImageModel) -> bool:
    # gpt-image-2: sides divisible by 16, aspect ratio within 1:3..3:1, at most 3840x2160.
    return (
        width % model.multiple_of == 0
        and height % model.multiple_of == 0
        and 1 / model.max_ratio <= width / height <= model.max_ratio
        and max(width, height) <= model.max_side
        and model.min_pixels <= width * height <= model.max_pixels
    )


# -- edit inputs ---------------------------------------------------------------------------------


def form_body(form: dict[str, list[Any]]) -> tuple[dict[str, Any], list[UploadedFile], UploadedFile | None]:
    """A multipart edit as the schema sees it: fields coerced as a form means them, files as markers."""
    body: dict[str, Any] = {}
    images: list[UploadedFile] = []
    mask: UploadedFile | None = None
    for name, values in form.items():
        key = name.removesuffix("[]")
        if key in ("image", "mask"):
            files = [value for value in values if isinstance(value, UploadedFile)]
            if len(files) != len(values):
                raise ApiError(f"Invalid '{key}': expected a file upload.", key, "invalid_type")
            markers = [f"<file {file.filename}>" for file in files]
            if key == "mask":
                mask, body["mask"] = files[0], markers[0] if len(files) == 1 else markers
            else:
                images += files
                body["image"] = markers if name.endswith("[]") or len(files) > 1 else markers[0]
        else:
            body[name] = _coerce(name, values[-1])
    return body, images, mask


def _coerce(name: str, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if name in _FORM_INTEGERS and re.fullmatch(r"-?\d+", value):
        return int(value)
    if name in _FORM_BOOLEANS and value in ("true", "false"):
        return value == "true"
    return value


def decode_data_url(url: str, param: str) -> bytes:
    """The bytes of a base64 data URL; the emulator never fetches remote images."""
    match = re.fullmatch(r"data:image/[\w.+-]+;base64,(.*)", url, re.DOTALL)
    if match is None:
        raise ApiError(f"Invalid '{param}': the emulator accepts only base64 data URLs.", param, "invalid_value")
    try:
        return base64.b64decode(match[1], validate=True)
    except binascii.Error as exc:
        raise ApiError(f"Invalid '{param}': bad base64 data.", param, "invalid_value") from exc


@dataclass(frozen=True)
class _Picture:
    format: str | None
    width: int
    height: int
    has_alpha: bool


def _inspect(data: bytes, param: str) -> _Picture:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
            return _Picture(image.format, image.width, image.height, alpha)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ApiError(f"Invalid '{param}': not a valid image file.", param, "invalid_image_format") from exc


def check_edit_inputs(images: list[bytes], mask: bytes | None, model: ImageModel, param: str) -> None:
    """The prose rules on an edit's images and mask."""
    if not model.gpt and len(images) != 1:
        raise ApiError(f"Invalid '{param}': {model.name} takes exactly one image.", param, "invalid_value")
    first: _Picture | None = None
    for data in images:
        picture = _inspect(data, param)
        first = first or picture
        if model.gpt:
            if picture.format not in ("PNG", "JPEG", "WEBP") or len(data) >= 50 * _MB:
                raise ApiError(f"Invalid '{param}': each image must be a png, webp or jpg under 50MB.", param)
        elif picture.format != "PNG" or picture.width != picture.height or len(data) >= 4 * _MB:
            raise ApiError(f"Invalid '{param}': {model.name} takes a square png under 4MB.", param)
    if mask is not None and first is not None:
        picture = _inspect(mask, "mask")
        if picture.format != "PNG" or not picture.has_alpha or len(mask) >= 4 * _MB:
            raise ApiError("Invalid 'mask': the mask must be a png with an alpha channel, under 4MB.", "mask")
        if (picture.width, picture.height) != (first.width, first.height):
            raise ApiError("Invalid 'mask': mask size does not match image size.", "mask", "invalid_value")


# -- the emulator --------------------------------------------------------------------------------

Route = Callable[["OpenAIEmulator", web.Request], Awaitable[web.StreamResponse]]


def _openai_errors(route: Route) -> Route:
    @functools.wraps(route)
    async def wrapper(self: OpenAIEmulator, request: web.Request) -> web.StreamResponse:
        try:
            return await route(self, request)
        except ApiError as exc:
            return web.json_response(self.api_error_body(exc), status=exc.status)

    return wrapper


class OpenAIEmulator(Emulator):
    """OpenAI's Images API, strict about the official spec. ``models`` adds models (a newer GPT
    image model, an OpenAI-compatible vendor's) to the ones the spec names."""

    def __init__(self, api_key: str = "test-upstream-key", models: tuple[ImageModel, ...] = ()) -> None:
        super().__init__(api_key)
        self.models = {**MODELS, **{model.name: model for model in models}}
        self.stream_delay = 0.0
        """Seconds between streamed events (the real API takes seconds per partial image)."""
        self.stream_break_after: int | None = None
        """Streamed answers send this many events, then an ``error`` event (a failure mid-stream)."""

    def reset(self) -> None:
        super().reset()
        self.stream_delay, self.stream_break_after = 0.0, None

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/images/generations", self._generations),
            web.post("/v1/images/edits", self._edits),
            web.get("/v1/models", self._models),
        ]

    def error_body(self, status: int, message: str, code: str | None) -> dict[str, Any]:
        return self.api_error_body(ApiError(message, None, code, status))

    @staticmethod
    def api_error_body(error: ApiError) -> dict[str, Any]:
        kind = "server_error" if error.status >= 500 else "invalid_request_error"
        code = error.code
        if error.status == 429:
            kind, code = "requests", code or "rate_limit_exceeded"
        return {"error": {"message": error.message, "type": kind, "param": error.param, "code": code}}

    def response_headers(self) -> dict[str, str]:
        return {"x-request-id": f"req_{uuid.uuid4().hex}"}

    def moderate(self, times: int = 1) -> None:
        """Refuse the next `times` image requests as the safety system does."""
        # Shape seen in issue logs, not in the spec.
        message = (
            "Your request was rejected by the safety system. "
            "Your request may contain content that is not allowed by our safety system."
        )
        error = {"message": message, "type": "image_generation_user_error", "param": None}
        body = {"error": {**error, "code": "moderation_blocked"}}
        self.fail(Failure(status=400, body=body, path="/v1/images/"), times=times)

    # -- routes ----------------------------------------------------------------------------------

    @_openai_errors
    async def _generations(self, request: web.Request) -> web.StreamResponse:
        self._authorize(request)
        body = self.recorded(request).json
        if not isinstance(body, dict):
            raise ApiError("We could not parse the JSON body of your request.")
        validate(body, "CreateImageRequest")
        return await self._answer(request, resolve(body, "generations", models=self.models), "image_generation")

    @_openai_errors
    async def _edits(self, request: web.Request) -> web.StreamResponse:
        self._authorize(request)
        recorded = self.recorded(request)
        if request.content_type == "multipart/form-data":
            body, uploads, mask_upload = form_body(recorded.form)
            validate(body, "CreateImageEditRequest")
            images = [upload.data for upload in uploads]
            mask = mask_upload.data if mask_upload else None
            param = "image"
        elif request.content_type == "application/json" and isinstance(recorded.json, dict):
            body = recorded.json
            validate(body, "EditImageBodyJsonParam")
            images = [decode_data_url(ref.get("image_url", ""), "images") for ref in body["images"]]
            mask = decode_data_url(body["mask"].get("image_url", ""), "mask") if body.get("mask") else None
            param = "images"
        else:
            raise ApiError("Send the edit as multipart/form-data or as a JSON object.")
        job = resolve(body, "edits", input_images=len(images), models=self.models)
        if request.content_type == "application/json" and not job.model.gpt:
            raise ApiError("JSON edits support GPT image models only.", "model", "invalid_value")
        check_edit_inputs(images, mask, job.model, param)
        return await self._answer(request, job, "image_edit")

    @_openai_errors
    async def _models(self, request: web.Request) -> web.StreamResponse:
        self._authorize(request)
        models = [{"id": name, "object": "model", "created": 1698785189, "owned_by": "system"} for name in self.models]
        return web.json_response({"object": "list", "data": models})

    def _authorize(self, request: web.Request) -> None:
        if self.auth_bearer(request):
            return
        if "Authorization" not in request.headers:
            raise ApiError(
                "You didn't provide an API key. You need to provide your API key in an Authorization header "
                "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                status=401,
            )
        raise ApiError("Incorrect API key provided.", code="invalid_api_key", status=401)

    # -- answers ---------------------------------------------------------------------------------

    async def _answer(self, request: web.Request, job: ImageJob, event_prefix: str) -> web.StreamResponse:
        images = await asyncio.to_thread(_render, job)
        if job.stream:
            return await self._stream(request, job, images, event_prefix)
        return web.json_response(self._images_response(job, images))

    def _images_response(self, job: ImageJob, images: list[bytes]) -> dict[str, Any]:
        data: list[dict[str, str]] = []
        for image in images:
            if job.model.gpt or job.response_format == "b64_json":
                item = {"b64_json": base64.b64encode(image).decode()}
            else:
                item = {"url": self.host_bytes(image, "image/png")}
            if job.model.name == "dall-e-3":
                item["revised_prompt"] = f"A detailed, vivid illustration of: {job.prompt}"
            data.append(item)
        response: dict[str, Any] = {"created": int(time.time()), "data": data}
        if job.model.gpt:
            response.update(
                background="transparent" if job.background == "transparent" else "opaque",
                output_format=job.output_format,
                size=f"{job.width}x{job.height}",
                quality=_effective_quality(job),
                usage=_usage(job, len(images)),
            )
        return response

    async def _stream(
        self, request: web.Request, job: ImageJob, images: list[bytes], event_prefix: str
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        settings = {
            "size": job.size,
            "quality": job.quality,
            "background": job.background,
            "output_format": job.output_format,
        }
        sent = 0

        async def send(event: str, data: dict[str, Any]) -> None:
            nonlocal sent
            if self.stream_break_after is not None and sent >= self.stream_break_after:
                error = {"message": "The image generation failed.", "type": "server_error", "param": None,
                         "code": "image_generation_failed"}
                await _send_event(response, "error", {"error": error})
                raise _StreamBroken
            await asyncio.sleep(self.stream_delay)
            await _send_event(response, event, data)
            sent += 1

        try:
            for number, image in enumerate(images):
                # Partial images are earlier, rougher states of the image: each one is different.
                partials = await asyncio.to_thread(_partials, job, number, job.partial_images)
                for index, partial in enumerate(partials):
                    b64 = base64.b64encode(partial).decode()
                    await send(f"{event_prefix}.partial_image",
                               {"b64_json": b64, **settings, "partial_image_index": index})
                completed = {"b64_json": base64.b64encode(image).decode(), **settings, "usage": _usage(job, 1)}
                await send(f"{event_prefix}.completed", completed)
        except _StreamBroken:
            pass
        await response.write_eof()
        return response


async def _send_event(response: web.StreamResponse, event: str, data: dict[str, Any]) -> None:
    payload = {"type": event, "created_at": int(time.time()), **data}
    await response.write(f"event: {event}\ndata: {json.dumps(payload)}\n\n".encode())


class _StreamBroken(Exception):
    pass


def _partials(job: ImageJob, number: int, count: int) -> list[bytes]:
    """``count`` rough early states of image ``number``, each a different picture (blurred
    noise sharpening towards the result), like the real API's partial images."""
    fmt = job.output_format if job.model.gpt else "png"
    seed = zlib.crc32(job.prompt.encode()) + number
    return [make_image(job.width, job.height, fmt, seed=seed * 31 + 1000 * (index + 1)) for index in range(count)]


def _render(job: ImageJob) -> list[bytes]:
    fmt = job.output_format if job.model.gpt else "png"
    seed = zlib.crc32(job.prompt.encode())
    transparent = job.background == "transparent"
    return [
        make_image(job.width, job.height, fmt, seed=seed + index, transparent=transparent) for index in range(job.n)
    ]


def _effective_quality(job: ImageJob) -> str:
    return "high" if job.quality == "auto" else job.quality


def _usage(job: ImageJob, images: int) -> dict[str, Any]:
    # Plausible numbers in the documented shape, not OpenAI's exact accounting.
    per_image = _TOKENS_PER_MEGAPIXEL[_effective_quality(job)] * job.width * job.height // (1024 * 1024)
    text_in, image_in = max(1, len(job.prompt) // 4), _INPUT_IMAGE_TOKENS * job.input_images
    image_out = per_image * images
    return {
        "input_tokens": text_in + image_in,
        "output_tokens": image_out,
        "total_tokens": text_in + image_in + image_out,
        "input_tokens_details": {"text_tokens": text_in, "image_tokens": image_in},
        "output_tokens_details": {"image_tokens": image_out, "text_tokens": 0},
    }
