"""Emulator of the Gemini API's ``generateContent`` for the Nano Banana image models.

Strict about what the gateway must get right (providers.md §2, google-genai ``types.py``):
the key (``x-goog-api-key`` or ``?key=``), known model names (``MODELS``; a test may add one),
``contents`` present and made of well-formed parts (exactly one of text / inlineData / fileData;
inlineData decodes to an image), no unknown fields (Google refuses them with "Invalid JSON payload
received. Unknown name"), and the enums of ``responseModalities``, ``imageConfig.aspectRatio`` and
``imageSize`` — each model's own (the extreme ratios and 512 on the 3.1 models only, 2K/4K not on
the 1K-only ones). Answers carry a real PNG of the shape asked for, at Google's 1K
dimensions (×2 for 2K, ×4 for 4K), plus ``usageMetadata``.

Failure modes beyond ``fail()``: ``no_image(finish_reason=...)`` (a 200 without an image, as the
real model answers when it declines to draw) and ``block_prompt(reason=...)``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import math
import threading
import uuid
import zlib
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from tests.emulators.base import Emulator, make_image

# The documented ten; the Gemini 3.1 image models add the extremes (google-genai's newer enum).
RATIOS_10 = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
RATIOS_14 = (*RATIOS_10, "1:4", "4:1", "1:8", "8:1")
RATIOS = RATIOS_14


@dataclass(frozen=True)
class Model:
    """What one Gemini image model takes: ``imageConfig.aspectRatio`` and ``imageSize`` values."""

    ratios: tuple[str, ...]
    sizes: tuple[str, ...]


FLASH = Model(RATIOS_10, ("1K",))
PRO = Model(RATIOS_10, ("1K", "2K", "4K"))
MODELS = {
    "gemini-2.5-flash-image": FLASH, "gemini-2.5-flash-image-preview": FLASH,
    "gemini-3-pro-image-preview": PRO, "gemini-3-pro-image": PRO,
    "gemini-3.1-flash-image-preview": Model(RATIOS_14, ("512", "1K", "2K", "4K")),
    "gemini-3.1-flash-image": Model(RATIOS_14, ("512", "1K", "2K", "4K")),
    "gemini-3.1-flash-lite-image": Model(RATIOS_14, ("1K",)),
}
# Gemini's output dimensions at 1K per aspect ratio (Google's image-generation guide).
DIMS_1K = {"1:1": (1024, 1024), "2:3": (832, 1248), "3:2": (1248, 832), "3:4": (864, 1184), "4:3": (1184, 864),
           "4:5": (896, 1152), "5:4": (1152, 896), "9:16": (768, 1344), "16:9": (1344, 768), "21:9": (1536, 672),
           "1:4": (512, 2048), "4:1": (2048, 512), "1:8": (384, 3072), "8:1": (3072, 384)}
SCALE = {"512": 0.5, "1K": 1, "2K": 2, "4K": 4}
MODALITIES = ("TEXT", "IMAGE", "AUDIO", "VIDEO")
STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
          429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


class GoogleError(Exception):
    def __init__(self, status: int, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.details = status, message, details or []


class _Strict(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class _Blob(_Strict):
    mime_type: str
    data: str


class _FileData(_Strict):
    mime_type: str | None = None
    file_uri: str


class _Part(_Strict):
    text: str | None = None
    inline_data: _Blob | None = None
    file_data: _FileData | None = None
    thought: bool | None = None
    thought_signature: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> _Part:
        if sum(x is not None for x in (self.text, self.inline_data, self.file_data)) != 1:
            raise ValueError("a part holds exactly one of text, inlineData, fileData")
        return self


class _Content(_Strict):
    role: str | None = None
    parts: list[_Part]


class _ImageConfig(_Strict):
    aspect_ratio: str | None = None
    image_size: str | None = None


class _GenerationConfig(_Strict):
    response_modalities: list[str] | None = None
    candidate_count: int | None = None
    seed: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_output_tokens: int | None = None
    stop_sequences: list[str] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    response_mime_type: str | None = None
    thinking_config: dict[str, Any] | None = None
    media_resolution: str | None = None
    image_config: _ImageConfig | None = None


class _Request(_Strict):
    contents: list[_Content]
    generation_config: _GenerationConfig | None = None
    safety_settings: list[dict[str, Any]] | None = None
    system_instruction: _Content | None = None
    tools: list[dict[str, Any]] | None = None
    tool_config: dict[str, Any] | None = None
    cached_content: str | None = None


@dataclass
class _Outcome:
    kind: str  # "no_image" | "block"
    reason: str
    message: str | None


class GeminiEmulator(Emulator):
    """A loopback Gemini API; ``calls`` records every request."""

    def __init__(self, api_key: str = "test-upstream-key", models: dict[str, Model] | None = None) -> None:
        super().__init__(api_key)
        self.models = {**MODELS, **(models or {})}
        """Models this upstream serves (a test may add one Google has not shipped yet)."""
        self._outcomes: list[_Outcome] = []
        self._outcome_lock = threading.Lock()

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1beta/models/{target}", self._generate)]

    def error_body(self, status: int, message: str, code: str | None) -> dict[str, Any]:
        error: dict[str, Any] = {"code": status, "message": message, "status": STATUS.get(status, "UNKNOWN")}
        if status == 429:
            # The quota body observed in the wild (providers.md §2, [GG-429]).
            error["details"] = [
                {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
                 "violations": [{"quotaMetric": "generativelanguage.googleapis.com/generate_content_requests",
                                 "quotaId": "GenerateRequestsPerMinutePerProjectPerModel"}]},
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"},
            ]
        return {"error": error}

    def malformed_body(self) -> tuple[bytes, str]:
        return b'{"candidates": [{"content": {"parts": [{"inlineData": ', "application/json"

    def reset(self) -> None:
        super().reset()
        with self._outcome_lock:
            self._outcomes.clear()

    # -- failure helpers -------------------------------------------------------------------------

    def no_image(self, finish_reason: str = "NO_IMAGE", message: str | None = None, *, times: int = 1) -> None:
        """The next ``times`` answers are 200s whose candidate has no image."""
        with self._outcome_lock:
            self._outcomes += [_Outcome("no_image", finish_reason, message) for _ in range(times)]

    def block_prompt(self, reason: str = "SAFETY", message: str | None = None, *, times: int = 1) -> None:
        """The next ``times`` answers are 200s with ``promptFeedback.blockReason`` and no candidates."""
        with self._outcome_lock:
            self._outcomes += [_Outcome("block", reason, message) for _ in range(times)]

    def generate_calls(self) -> list[Any]:
        """Recorded ``generateContent`` requests."""
        return [c for c in self.calls if c.path.endswith(":generateContent")]

    # -- the route -------------------------------------------------------------------------------

    async def _generate(self, request: web.Request) -> web.Response:
        try:
            return await self._answer(request)
        except GoogleError as exc:
            body = self.error_body(exc.status, exc.message, None)
            if exc.details:
                body["error"]["details"] = exc.details
            return web.json_response(body, status=exc.status)

    async def _answer(self, request: web.Request) -> web.Response:
        self._authorize(request)
        model, _, method = request.match_info["target"].partition(":")
        if method != "generateContent":
            raise GoogleError(404, f"Method {method!r} is not found.")
        if model not in self.models:
            raise GoogleError(404, f"models/{model} is not found for API version v1beta, or is not supported "
                                   "for generateContent. Call ListModels to see the list of available models.")
        recorded = self.recorded(request)
        if not isinstance(recorded.json, dict):
            raise GoogleError(400, "Invalid JSON payload received.")
        try:
            req = _Request.model_validate(recorded.json)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise GoogleError(400, f"Invalid JSON payload received. {where}: {first['msg']}") from exc
        ratio, size, inputs = self._validate(self.models[model], model, req)
        with self._outcome_lock:
            outcome = self._outcomes.pop(0) if self._outcomes else None
        if outcome is not None:
            return web.json_response(_failure_answer(model, outcome))
        if ratio is None:
            ratio = _nearest(inputs[0]) if inputs else "1:1"
        w, h = (int(d * SCALE[size]) for d in DIMS_1K[ratio])
        prompt = " ".join(p.text for c in req.contents for p in c.parts if p.text)
        png = await asyncio.to_thread(make_image, w, h, "png", seed=zlib.crc32(prompt.encode()))
        parts: list[dict[str, Any]] = [{"text": "Here is the image you asked for."}]
        parts.append({"inlineData": {"mimeType": "image/png", "data": base64.b64encode(png).decode()}})
        text_tokens = max(1, len(prompt) // 4)
        image_in = 258 * len(inputs)
        image_out = {"512": 1290, "1K": 1290, "2K": 1290, "4K": 2000}[size]
        return web.json_response({
            "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {
                "promptTokenCount": text_tokens + image_in, "candidatesTokenCount": image_out + 8,
                "totalTokenCount": text_tokens + image_in + image_out + 8,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": text_tokens}]
                + ([{"modality": "IMAGE", "tokenCount": image_in}] if inputs else []),
                "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": image_out},
                                            {"modality": "TEXT", "tokenCount": 8}],
            },
            "modelVersion": model, "responseId": uuid.uuid4().hex[:20],
        })

    def _authorize(self, request: web.Request) -> None:
        key = request.headers.get("x-goog-api-key") or request.query.get("key")
        if key is None:
            raise GoogleError(403, "Method doesn't allow unregistered callers (callers without established "
                                   "identity). Please use API Key or other form of API consumer identity to "
                                   "call this API.")
        if key != self.api_key:
            raise GoogleError(400, "API key not valid. Please pass a valid API key.", [
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                 "domain": "googleapis.com"}])

    @staticmethod
    def _validate(caps: Model, model: str, req: _Request) -> tuple[str | None, str, list[tuple[int, int]]]:
        if not req.contents:
            raise GoogleError(400, "* GenerateContentRequest.contents: contents is not specified")
        for c in req.contents:
            if c.role not in (None, "user", "model"):
                raise GoogleError(400, f"Please use a valid role: user, model. (got {c.role!r})")
            if not c.parts:
                raise GoogleError(400, "* GenerateContentRequest.contents.parts: contents.parts must not be empty.")
        inputs: list[tuple[int, int]] = []
        for c in req.contents:
            for p in c.parts:
                if p.inline_data is None:
                    continue
                try:
                    # Proto3 JSON accepts standard and URL-safe base64, padded or not; google-genai
                    # itself sends URL-safe (``base64.urlsafe_b64encode`` in ``_common.py``).
                    data = p.inline_data.data.replace("-", "+").replace("_", "/")
                    raw = base64.b64decode(data + "=" * (-len(data) % 4), validate=True)
                    with Image.open(io.BytesIO(raw)) as im:
                        inputs.append(im.size)
                except (binascii.Error, ValueError, UnidentifiedImageError) as exc:
                    raise GoogleError(400, "Unable to process input image. Please retry or report in "
                                           "https://developers.generativeai.google/guide/troubleshooting") from exc
                if not p.inline_data.mime_type.startswith("image/"):
                    raise GoogleError(400, f"Unsupported MIME type: {p.inline_data.mime_type}")
        config = req.generation_config or _GenerationConfig()
        modalities = config.response_modalities or ["TEXT", "IMAGE"]
        if bad := [m for m in modalities if m not in MODALITIES]:
            raise GoogleError(400, f"Invalid value at 'generation_config.response_modalities' ({bad[0]})")
        if "IMAGE" not in modalities:
            raise GoogleError(400, "Model does not support the requested response modalities: text")
        if (config.candidate_count or 1) != 1:
            raise GoogleError(400, "Multiple candidates is not enabled for this model.")
        image = config.image_config or _ImageConfig()
        if image.aspect_ratio is not None and image.aspect_ratio not in RATIOS:
            raise GoogleError(400, f"Unsupported aspect ratio: {image.aspect_ratio}")
        if image.aspect_ratio is not None and image.aspect_ratio not in caps.ratios:
            raise GoogleError(400, f"Aspect ratio {image.aspect_ratio} is not supported by {model}.")
        size = image.image_size or "1K"
        if size not in SCALE:
            raise GoogleError(400, f"Unsupported image size: {size}. Use 1K, 2K or 4K.")
        if size not in caps.sizes:
            raise GoogleError(400, f"Image size {size} is not supported by {model}.")
        return image.aspect_ratio, size, inputs


def _nearest(wh: tuple[int, int]) -> str:
    target = math.log(wh[0] / wh[1])
    return min(DIMS_1K, key=lambda r: abs(math.log(DIMS_1K[r][0] / DIMS_1K[r][1]) - target))


def _failure_answer(model: str, outcome: _Outcome) -> dict[str, Any]:
    usage = {"promptTokenCount": 12, "totalTokenCount": 12,
             "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 12}]}
    if outcome.kind == "block":
        feedback: dict[str, Any] = {"blockReason": outcome.reason}
        if outcome.message:
            feedback["blockReasonMessage"] = outcome.message
        return {"promptFeedback": feedback, "usageMetadata": usage, "modelVersion": model}
    said = outcome.message or "I can't create that image. Try describing something else."
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": said}]},
                                 "finishReason": outcome.reason, "index": 0}
    if outcome.reason != "STOP":
        candidate["finishMessage"] = said
    return {"candidates": [candidate], "usageMetadata": usage, "modelVersion": model}
