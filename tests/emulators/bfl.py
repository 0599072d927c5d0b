"""Emulator of the Black Forest Labs FLUX API: submit ``POST /v1/<model>``, poll ``polling_url``.

Strict where the official SDK's input models are (``black-forest-labs/blackforest``
``types/inputs/*``): the ``x-key`` header, known endpoints, required fields, no unknown fields
(refused like FastAPI does, 422 ``{"detail": [{loc, msg, type}]}``), Kontext ``aspect_ratio``
between 21:9 and 9:21, ``width``/``height`` multiples of 32 in 256–1440, base64 images that
decode, ``safety_tolerance`` 0–6, ``steps``/``guidance`` ranges.

A task stays ``Pending`` for ``pending_polls`` polls, then turns ``Ready`` with ``result.sample``
hosted by this emulator (a real image of the size the model would make), or ends the way
``task_outcome()`` scripted: ``Request Moderated``, ``Content Moderated``, ``Error``,
``Task not found``. ``submits()`` lists the submit requests (a test can check "not twice").
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import math
import re
import threading
import uuid
from dataclasses import dataclass
from typing import Any, ClassVar

from aiohttp import web
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tests.emulators.base import Emulator, RecordedRequest, make_image

KONTEXT = ("flux-kontext-pro", "flux-kontext-max", "flux-kontext-dev")


class _Common(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1)
    seed: int | None = None
    safety_tolerance: int = Field(default=2, ge=0, le=6)
    output_format: str | None = Field(default=None, pattern="^(jpeg|png)$")
    prompt_upsampling: bool = False
    webhook_url: str | None = None
    webhook_secret: str | None = None


def _check_b64(value: str | None) -> str | None:
    if value is not None:
        try:
            with Image.open(io.BytesIO(base64.b64decode(value, validate=True))):
                pass
        except (binascii.Error, ValueError, UnidentifiedImageError) as exc:
            raise ValueError("must be a base64 encoded image") from exc
    return value


class _Kontext(_Common):
    input_image: str | None = None
    input_image_2: str | None = None
    input_image_3: str | None = None
    input_image_4: str | None = None
    aspect_ratio: str | None = None

    _images = field_validator("input_image", "input_image_2", "input_image_3", "input_image_4")(_check_b64)

    @field_validator("aspect_ratio")
    @classmethod
    def _ratio(cls, v: str | None) -> str | None:
        if v is not None:
            if not re.fullmatch(r"\d+:\d+", v):
                raise ValueError("Aspect ratio must be in the format of 'width:height'")
            w, h = map(int, v.split(":"))
            if h == 0 or not 9 / 21 <= w / h <= 21 / 9:
                raise ValueError(f"Aspect ratio {v} must be between 21:9 and 9:21")
        return v


class _Dims(_Common):
    image_prompt: str | None = None
    width: int = Field(default=1024, ge=256, le=1440, multiple_of=32)
    height: int = Field(default=768, ge=256, le=1440, multiple_of=32)

    _image = field_validator("image_prompt")(_check_b64)


class _DevInputs(_Dims):
    steps: int = Field(default=28, ge=1, le=50)
    guidance: float = Field(default=3.0, ge=1.5, le=5.0)


class _ProInputs(_DevInputs):
    interval: float = Field(default=2.0, ge=1.0, le=4.0)


class _Ultra(_Common):
    image_prompt: str | None = None
    image_prompt_strength: float = Field(default=0.1, ge=0, le=1)
    aspect_ratio: str = "16:9"
    raw: bool = False

    _image = field_validator("image_prompt")(_check_b64)
    _ratio = field_validator("aspect_ratio")(_Kontext._ratio.__func__)  # type: ignore[attr-defined]


class _Flux2(_Common):
    """FLUX.2 [pro]/[max] (the SDK's ``Flux2Params``): up to eight references, free sizes in
    multiples of 16 up to 4 MP, jpeg/png/webp, prompt upsampling as ``disable_pup``."""

    upsampling_field: ClassVar[str | None] = "disable_pup"
    disable_pup: bool | None = None
    safety_tolerance: int = Field(default=2, ge=0, le=5)
    output_format: str | None = Field(default=None, pattern="^(jpeg|png|webp)$")
    width: int | None = Field(default=None, ge=64, multiple_of=16)
    height: int | None = Field(default=None, ge=64, multiple_of=16)
    input_image: str | None = None
    input_image_2: str | None = None
    input_image_3: str | None = None
    input_image_4: str | None = None
    input_image_5: str | None = None
    input_image_6: str | None = None
    input_image_7: str | None = None
    input_image_8: str | None = None

    _images = field_validator(*(f"input_image{s}" for s in ("", *(f"_{i}" for i in range(2, 9)))))(_check_b64)

    @model_validator(mode="before")
    @classmethod
    def _upsampling_field(cls, data: Any) -> Any:
        for name in ("prompt_upsampling", "disable_pup"):
            if isinstance(data, dict) and name in data and name != cls.upsampling_field:
                raise ValueError(f"Extra inputs are not permitted: {name}")
        return data

    @model_validator(mode="after")
    def _at_most_4mp(self) -> _Flux2:
        if self.width and self.height and self.width * self.height > 2048 * 2048:
            raise ValueError("width*height exceeds the 4MP limit")
        return self


class _Flux2Flex(_Flux2):
    upsampling_field = "prompt_upsampling"  # flex takes it as itself
    steps: int = Field(default=50, ge=1, le=50)
    guidance: float = Field(default=5.0, ge=1.5, le=10.0)


class _Flux2Klein(_Flux2):
    upsampling_field = None  # klein has no upsampling control


class _Flux3Preview(_Flux2):
    """A model BFL has not shipped (tests add it through the operator's ``catalog:``): FLUX.2's
    fields with ten reference images."""

    input_image_9: str | None = None
    input_image_10: str | None = None

    _more = field_validator("input_image_9", "input_image_10")(_check_b64)


MAX_IMAGES = {"flux-2-klein-4b": 4, "flux-2-klein-9b": 5}

SCHEMAS: dict[str, type[_Common]] = {
    **dict.fromkeys(KONTEXT, _Kontext),
    "flux-pro-1.1": _Dims,
    "flux-dev": _DevInputs,
    "flux-pro": _ProInputs,
    "flux-pro-1.1-ultra": _Ultra,
    "flux-2-pro": _Flux2,
    "flux-2-max": _Flux2,
    "flux-2-flex": _Flux2Flex,
    "flux-2-klein-4b": _Flux2Klein,
    "flux-2-klein-9b": _Flux2Klein,
    "flux-3-preview": _Flux3Preview,
}


@dataclass
class _Task:
    id: str
    model: str
    prompt: str
    width: int
    height: int
    fmt: str
    seed: int
    polls_left: int
    outcome: tuple[str, Any] | None  # scripted terminal (status, details)


class BflEmulator(Emulator):
    """A loopback BFL API."""

    def __init__(self, api_key: str = "test-upstream-key") -> None:
        super().__init__(api_key)
        self.pending_polls = 1
        self.polling_base: str | None = None
        """Host of the returned ``polling_url`` (default: this emulator), e.g. a "regional" alias."""
        self._tasks: dict[str, _Task] = {}
        self._outcomes: list[tuple[str, Any]] = []
        self._task_lock = threading.Lock()

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/v1/get_result", self._get_result), web.post("/v1/{model}", self._submit)]

    def error_body(self, status: int, message: str, code: str | None) -> dict[str, Any]:
        return {"detail": message}

    def malformed_body(self) -> tuple[bytes, str]:
        return b'{"id": "abc", "polling_', "application/json"

    def reset(self) -> None:
        super().reset()
        self.pending_polls = 1
        self.polling_base = None
        with self._task_lock:
            self._outcomes.clear()

    def task_outcome(self, status: str, details: Any = None, *, times: int = 1) -> None:
        """The next ``times`` submitted tasks end with ``status`` instead of ``Ready``."""
        with self._task_lock:
            self._outcomes += [(status, details)] * times

    def submits(self) -> list[RecordedRequest]:
        return [c for c in self.calls if c.method == "POST" and c.path.startswith("/v1/")]

    def polls(self) -> list[RecordedRequest]:
        return [c for c in self.calls if c.path == "/v1/get_result"]

    # -- routes ----------------------------------------------------------------------------------

    def _auth(self, request: web.Request) -> web.Response | None:
        key = request.headers.get("x-key")
        if key is None:
            return web.json_response({"detail": "Not authenticated"}, status=403)
        if key != self.api_key:
            return web.json_response({"detail": "Not authenticated - Invalid Authentication"}, status=403)
        return None

    async def _submit(self, request: web.Request) -> web.Response:
        if (denied := self._auth(request)) is not None:
            return denied
        model = request.match_info["model"]
        schema = SCHEMAS.get(model)
        if schema is None:
            return web.json_response({"detail": "Not Found"}, status=404)
        body = self.recorded(request).json
        if not isinstance(body, dict):
            return _unprocessable(["body"], "Input should be a valid dictionary or object", "dict_type")
        try:
            inputs = schema.model_validate(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            return _unprocessable(["body", *first["loc"]], first["msg"], first["type"])
        if model == "flux-kontext-dev" and not body.get("input_image"):
            return _unprocessable(["body", "input_image"], "Field required", "missing")
        refs = [k for k in body if k.startswith("input_image")]
        if len(refs) > MAX_IMAGES.get(model, len(refs)):
            return _unprocessable(["body", refs[-1]], f"{model} takes at most {MAX_IMAGES[model]} images",
                                  "value_error")
        w, h = _output_size(model, inputs)
        fmt = inputs.output_format or ("png" if model in KONTEXT else "jpeg")
        task_id = str(uuid.uuid4())
        with self._task_lock:
            outcome = self._outcomes.pop(0) if self._outcomes else None
            self._tasks[task_id] = _Task(task_id, model, inputs.prompt, w, h, fmt, inputs.seed or 42,
                                         self.pending_polls, outcome)
        base = self.polling_base or self.url
        return web.json_response({"id": task_id, "polling_url": f"{base}/v1/get_result?id={task_id}",
                                  "cost": 4.0})

    async def _get_result(self, request: web.Request) -> web.Response:
        if (denied := self._auth(request)) is not None:
            return denied
        task_id = request.query.get("id", "")
        with self._task_lock:
            task = self._tasks.get(task_id)
            if task is not None and task.polls_left > 0:
                task.polls_left -= 1
                return web.json_response({"id": task_id, "status": "Pending", "result": None, "progress": 0.5,
                                          "details": None, "preview": None})
        if task is None or (task.outcome and task.outcome[0] == "Task not found"):
            return web.json_response({"id": task_id, "status": "Task not found", "result": None})
        if task.outcome is not None:
            status, details = task.outcome
            return web.json_response({"id": task_id, "status": status, "result": None, "progress": None,
                                      "details": details})
        data = await asyncio.to_thread(make_image, task.width, task.height, task.fmt, seed=task.seed)
        sample = self.host_bytes(data, f"image/{task.fmt}")
        return web.json_response({
            "id": task_id, "status": "Ready", "progress": None, "details": None, "preview": None,
            "result": {"sample": sample, "prompt": f"{task.prompt}, highly detailed", "seed": task.seed,
                       "start_time": 1.0, "end_time": 2.0, "duration": 1.0},
        })


def _unprocessable(loc: list[str | int], msg: str, kind: str) -> web.Response:
    return web.json_response({"detail": [{"loc": loc, "msg": msg, "type": kind}]}, status=422)


def _output_size(model: str, inputs: _Common) -> tuple[int, int]:
    if isinstance(inputs, _Dims):
        return inputs.width, inputs.height
    if isinstance(inputs, _Flux2):
        if inputs.width and inputs.height:
            return inputs.width, inputs.height
        if inputs.input_image:  # no size asked: the first reference's, in multiples of 16
            with Image.open(io.BytesIO(base64.b64decode(inputs.input_image))) as im:
                return max(64, round(im.width / 16) * 16), max(64, round(im.height / 16) * 16)
        return 1024, 1024
    assert isinstance(inputs, _Kontext | _Ultra)
    area = 2048 * 2048 if isinstance(inputs, _Ultra) else 1024 * 1024
    if inputs.aspect_ratio:
        w, h = map(int, inputs.aspect_ratio.split(":"))
        ratio = w / h
    elif isinstance(inputs, _Kontext) and inputs.input_image:
        with Image.open(io.BytesIO(base64.b64decode(inputs.input_image))) as im:
            ratio = im.width / im.height
    else:
        ratio = 1.0
    # Kontext draws about one megapixel (Ultra four) in the requested shape, sides multiples of 16.
    return round(math.sqrt(area * ratio) / 16) * 16, round(math.sqrt(area / ratio) / 16) * 16
