"""Alibaba Cloud DashScope (Model Studio): the Qwen-Image models, as wire translation only.

What each model accepts (sizes, images, ``n``, parameters) is the catalog's ``dashscope`` section;
this module reads ``call.spec`` and its ``wire:`` facts (``DashScopeWire``). Two endpoints, chosen
by ``wire.endpoint`` (Model Studio's Qwen-Image and Qwen-Image-Edit API references; the official
SDK ``dashscope/dashscope-sdk-python``):

- ``task``: ``POST /api/v1/services/aigc/text2image/image-synthesis`` with ``X-DashScope-Async:
  enable`` (the endpoint refuses synchronous calls), then ``GET /api/v1/tasks/{task_id}`` until
  ``SUCCEEDED``/``FAILED``/``CANCELED``/``UNKNOWN``. The gateway's step loop does the polling;
  result URLs are downloaded at once (they last 24 h). Only ``qwen-image`` and
  ``qwen-image-plus`` take it.
- ``multimodal``: ``POST /api/v1/services/aigc/multimodal-generation/generation``, synchronous: one
  user message holding the reference images as data URIs (none for text to image) and the prompt.

Sizes are ``W*H`` (an asterisk): the nearest of the catalog's ``sizes``, or a free size brought
within ``wire.free_size``. ``watermark`` is sent as ``false`` unless the caller asks for it. The
default host is Singapore (``dashscope-intl``); Beijing keys need ``base_url:
https://dashscope.aliyuncs.com``. A RAM sub-account key needs its workspace: ``options:
{workspace: ...}`` sends ``X-DashScope-WorkSpace``.
"""

from __future__ import annotations

import base64
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from imagegate.core import errors
from imagegate.core.errors import InvalidRequest
from imagegate.core.geometry import dims_for_ratio, format_size, nearest_size, parse_ratio, parse_size
from imagegate.core.job import Call, ImageJob, OutputImage, Pending, ProviderResult
from imagegate.core.spec import ModelSpec
from imagegate.providers.base import Adapter, Reply

RATIO_SIDE = 1328
"""An ``aspect_ratio`` alone asks for about 1328x1328 pixels in that shape (qwen-image's square)."""
_T2I_PATH = "/api/v1/services/aigc/text2image/image-synthesis"
_MULTIMODAL_PATH = "/api/v1/services/aigc/multimodal-generation/generation"
_FLAGS = ("prompt_extend", "watermark")


class FreeSize(BaseModel):
    """Bounds of a model that draws any ``W*H`` within them (the catalog lists no ``sizes``)."""

    model_config = ConfigDict(extra="forbid")

    min_side: int = Field(default=16, ge=1)
    max_side: int | None = Field(default=None, ge=1)
    min_pixels: int | None = Field(default=None, ge=1)
    max_pixels: int | None = Field(default=None, ge=1)
    multiple: int = Field(default=16, ge=1)
    """The model rounds each side to a multiple of this; we send what it will draw."""


class DashScopeWire(BaseModel):
    """``wire:`` of a ``dashscope`` catalog entry."""

    model_config = ConfigDict(extra="forbid")

    endpoint: Literal["task", "multimodal"] = "multimodal"
    """``task``: the async text2image task (polled); ``multimodal``: the synchronous
    multimodal-generation endpoint (reference images and prompt in one user message)."""
    free_size: FreeSize | None = None


def flag(job: ImageJob, name: str) -> bool | None:
    """A boolean extra as JSON (``true``) or as a multipart edit field (``"true"``) sends it."""
    value = job.extra.get(name)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise InvalidRequest(f"{name} must be true or false.", param=name)


class _TaskOutput(BaseModel):
    task_id: str
    task_status: Literal["PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELED", "UNKNOWN"]
    results: list[_TaskResult] = Field(default_factory=list)
    code: str | None = None
    message: str | None = None


class _TaskResult(BaseModel):
    url: str | None = None
    code: str | None = None
    message: str | None = None


class _Task(BaseModel):
    output: _TaskOutput


class _Content(BaseModel):
    image: str | None = None
    text: str | None = None


class _Message(BaseModel):
    content: list[_Content]


class _Choice(BaseModel):
    message: _Message


class _MultimodalOutput(BaseModel):
    choices: list[_Choice]


class _Multimodal(BaseModel):
    output: _MultimodalOutput


class _Error(BaseModel):
    code: str | None = None
    message: str | None = None


_TaskOutput.model_rebuild()


def failure(code: str | None, message: str | None) -> errors.UpstreamError:
    """A DashScope error code as the error tree sees it. ``DataInspection`` codes
    (``DataInspectionFailed``, ``InvalidParameter.DataInspection``) are the content filter."""
    text = f"{code or 'Error'}: {message or 'the task failed'}"
    if code and "DataInspection" in code:
        return errors.ContentRefused(f"The upstream's content filter refused the request ({text}).",
                                     reason="SAFETY")
    if code and code.startswith("InvalidParameter"):
        return errors.UpstreamRejected(f"The upstream refused the request: {text}")
    return errors.UpstreamError(f"The upstream task failed: {text}")


def size_for(job: ImageJob, spec: ModelSpec, wire: DashScopeWire) -> str | None:
    """The ``W*H`` to send: ``aspect_ratio`` wins over ``size``; the nearest of the catalog's
    ``sizes``, or the request brought within ``wire.free_size``. None: the model chooses."""
    if "size" not in spec.params:
        return None
    wh = parse_size(job.size)
    if job.aspect_ratio:
        ratio = parse_ratio(job.aspect_ratio)
        wh = (round(RATIO_SIDE * ratio ** 0.5), round(RATIO_SIDE / ratio ** 0.5))
    if wh is None:
        return None
    if spec.sizes:
        return format_size(nearest_size(*wh, spec.sizes), "*")
    if wire.free_size is not None:
        return format_size(_within(*wh, wire.free_size), "*")
    return format_size(wh, "*")


def _within(w: int, h: int, b: FreeSize) -> tuple[int, int]:
    """``w``x``h`` in shape, scaled into the bounds, each side a multiple of ``b.multiple``."""
    area = max(w * h, b.min_pixels or 0)
    area = min(area, b.max_pixels or area)
    width, height = dims_for_ratio(w / h, area=area, multiple=b.multiple, lo=b.min_side,
                                   hi=b.max_side or 1 << 16)
    # Rounding to the multiple may step over an area bound: step back inside it.
    while b.max_pixels and width * height > b.max_pixels:
        width, height = (width - b.multiple, height) if width >= height else (width, height - b.multiple)
    while b.min_pixels and width * height < b.min_pixels:
        width, height = (width + b.multiple, height) if width <= height else (width, height + b.multiple)
    return width, height


class _Options(BaseModel):
    """``options:`` of a ``dashscope`` channel."""

    model_config = ConfigDict(extra="forbid")

    workspace: str | None = None
    """Sent as ``X-DashScope-WorkSpace``; needed by RAM sub-account keys."""


class DashScopeAdapter(Adapter):
    """Qwen-Image through the async text2image task or the synchronous multimodal endpoint."""

    provider = "dashscope"
    key_env = "DASHSCOPE_API_KEY"
    default_base_url = "https://dashscope-intl.aliyuncs.com"
    Options = _Options
    options: _Options
    Wire = DashScopeWire

    def check(self, job: ImageJob, spec: ModelSpec) -> None:
        for name in _FLAGS:
            if name in spec.params:
                flag(job, name)

    def _headers(self, **extra: str) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.channel.api_key or ''}", **extra}
        if self.options.workspace:
            headers["X-DashScope-WorkSpace"] = self.options.workspace
        return headers

    def build_request(self, call: Call) -> dict[str, Any]:
        """The native body: ``input`` (the prompt, or one user message with the images) and
        ``parameters``, for the endpoint the model's ``wire.endpoint`` names."""
        job, spec, wire = call.job, call.spec, self.wire(call.spec)
        honoured = spec.params
        watermark = flag(job, "watermark") if "watermark" in honoured else None
        params: dict[str, Any] = {"n": call.n, "watermark": bool(watermark)}  # false unless asked for
        if size := size_for(job, spec, wire):
            params["size"] = size
        if job.seed is not None and "seed" in honoured:
            # DashScope takes 0..2^31-1: a negative int32 seed keeps its low 31 bits.
            params["seed"] = job.seed & 0x7FFFFFFF
        if "prompt_extend" in honoured and (extend := flag(job, "prompt_extend")) is not None:
            params["prompt_extend"] = extend
        negative = job.negative_prompt if "negative_prompt" in honoured else None
        if wire.endpoint == "task":
            prompt: dict[str, str] = {"prompt": job.prompt} | ({"negative_prompt": negative} if negative else {})
            return {"model": call.upstream_model, "input": prompt, "parameters": params}
        if negative:
            params["negative_prompt"] = negative
        content: list[dict[str, str]] = [
            {"image": f"data:{img.mime};base64,{base64.b64encode(img.data).decode()}"} for img in call.images
        ]
        content.append({"text": job.prompt})
        return {"model": call.upstream_model, "input": {"messages": [{"role": "user", "content": content}]},
                "parameters": params}

    async def submit(self, call: Call) -> ProviderResult | Pending:
        body = self.build_request(call)
        if self.wire(call.spec).endpoint == "multimodal":
            reply = await self.send("POST", self.base_url + _MULTIMODAL_PATH, json=body, headers=self._headers())
            answer = self.parse(_Multimodal, reply).output
            return ProviderResult(images=[
                OutputImage(url=c.image) for choice in answer.choices for c in choice.message.content if c.image
            ])
        reply = await self.send("POST", self.base_url + _T2I_PATH, json=body,
                                headers=self._headers(**{"X-DashScope-Async": "enable"}))
        task = self.parse(_Task, reply).output
        return self.pending({"task_id": task.task_id})

    async def poll(self, handle: dict[str, Any]) -> ProviderResult | Pending:
        reply = await self.send("GET", f"{self.base_url}/api/v1/tasks/{handle['task_id']}",
                                headers=self._headers())
        task = self.parse(_Task, reply).output
        if task.task_status in ("PENDING", "RUNNING"):
            return self.pending(handle, progress=50 if task.task_status == "RUNNING" else 20)
        if task.task_status != "SUCCEEDED":
            if task.task_status == "UNKNOWN" and task.code is None:
                raise errors.UpstreamError("The upstream task is unknown or expired (tasks last 24 hours).")
            raise failure(task.code or task.task_status, task.message)
        images = [OutputImage(url=r.url) for r in task.results if r.url]
        failures = [f"{r.code}: {r.message}" for r in task.results if not r.url]
        if not images and task.results and all(r.code for r in task.results):
            raise failure(task.results[0].code, task.results[0].message)
        return ProviderResult(images=images, failures=failures)

    def _error(self, reply: Reply) -> _Error:
        try:
            return _Error.model_validate_json(reply.body)
        except ValueError:
            return _Error(message=reply.body[:300].decode("utf-8", "replace"))

    def error_message(self, reply: Reply) -> str:
        err = self._error(reply)
        return f"{err.code}: {err.message}" if err.code else err.message or f"HTTP {reply.status}"

    def error_for(self, reply: Reply) -> errors.UpstreamError:
        err = self._error(reply)
        if reply.status == 400 and err.code and "DataInspection" in err.code:
            return failure(err.code, err.message)
        return super().error_for(reply)
