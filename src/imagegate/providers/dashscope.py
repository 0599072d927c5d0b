"""Alibaba Cloud DashScope (Model Studio): qwen-image and qwen-image-edit.

Wire contract: Model Studio's API docs and the official SDK (``dashscope/dashscope-sdk-python``). Two
endpoints:

- ``qwen-image`` (and ``qwen-image-plus``) is an **async task**: ``POST
  /api/v1/services/aigc/text2image/image-synthesis`` with ``X-DashScope-Async: enable`` (the
  endpoint refuses synchronous calls), then ``GET /api/v1/tasks/{task_id}`` until
  ``SUCCEEDED``/``FAILED``/``CANCELED``/``UNKNOWN`` [DS-SDK base_api.py, TaskStatus]. The
  gateway's step loop does the polling; the result URLs are downloaded at once (they last 24 h).
  It makes one image per task (``n`` is fixed at 1 upstream), so the gateway fans out.
- ``qwen-image-edit*`` is **synchronous**: ``POST
  /api/v1/services/aigc/multimodal-generation/generation`` with the images as data URIs and the
  instruction in one user message. ``qwen-image-edit`` itself makes one image and follows the
  input's size; the later ``-plus`` models take ``n`` 1–6, ``size`` and up to 3 images
  (third-party copies of the docs; unverified).

Sizes are ``W*H`` (an asterisk). ``watermark`` is sent as ``false`` unless the caller asks for it.
The default host is Singapore (``dashscope-intl``); Beijing keys need
``base_url: https://dashscope.aliyuncs.com``. A RAM sub-account key needs its workspace:
``options: {workspace: ...}`` sends ``X-DashScope-WorkSpace``.
"""

from __future__ import annotations

import base64
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from imagegate.core import errors
from imagegate.core.errors import InvalidRequest
from imagegate.core.geometry import fit_within, format_size, nearest_size, parse_ratio, parse_size
from imagegate.core.job import Call, ImageJob, OutputImage, Pending, ProviderResult
from imagegate.providers.base import Adapter, ModelSpec, Reply

# qwen-image's sizes (16:9, 4:3, 1:1, 3:4, 9:16); consistent across many clients [DS-COMM].
QWEN_IMAGE_SIZES = ((1664, 928), (1472, 1140), (1328, 1328), (1140, 1472), (928, 1664))
MAX_PROMPT = 800
_T2I_PARAMS = frozenset({"size", "aspect_ratio", "negative_prompt", "seed", "prompt_extend", "watermark"})
_T2I = ModelSpec(max_n=1, params=_T2I_PARAMS, sizes=QWEN_IMAGE_SIZES, max_prompt=MAX_PROMPT)
_EDIT = ModelSpec(actions=frozenset({"generate", "edit"}), max_n=1, max_images=1, requires_image=True,
                  params=frozenset({"negative_prompt", "seed", "prompt_extend", "watermark"}), max_prompt=MAX_PROMPT)
_EDIT_PLUS = ModelSpec(actions=frozenset({"generate", "edit"}), max_n=6, max_images=3, requires_image=True,
                       params=_T2I_PARAMS, max_prompt=MAX_PROMPT)


def _is_edit(model: str) -> bool:
    return model.startswith("qwen-image-edit")


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


class _Options(BaseModel):
    """``options:`` of a ``dashscope`` channel."""

    model_config = ConfigDict(extra="forbid")

    workspace: str | None = None
    """Sent as ``X-DashScope-WorkSpace``; needed by RAM sub-account keys."""


class DashScopeAdapter(Adapter):
    """qwen-image through the async text2image task, qwen-image-edit through multimodal-generation."""

    provider = "dashscope"
    key_env = "DASHSCOPE_API_KEY"
    default_base_url = "https://dashscope-intl.aliyuncs.com"
    default_models = {"qwen-image": "qwen-image", "qwen-image-edit": "qwen-image-edit"}
    Options = _Options
    options: _Options

    def spec(self, upstream_model: str) -> ModelSpec:
        if not _is_edit(upstream_model):
            return _T2I
        return _EDIT if upstream_model == "qwen-image-edit" else _EDIT_PLUS

    def check(self, job: ImageJob, upstream_model: str) -> None:
        flag(job, "prompt_extend")
        flag(job, "watermark")

    def _headers(self, **extra: str) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.channel.api_key or ''}", **extra}
        if self.options.workspace:
            headers["X-DashScope-WorkSpace"] = self.options.workspace
        return headers

    @staticmethod
    def _size(job: ImageJob, upstream_model: str) -> str | None:
        wh = parse_size(job.size)
        if job.aspect_ratio:
            ratio = parse_ratio(job.aspect_ratio)
            wh = (round(1328 * ratio ** 0.5), round(1328 / ratio ** 0.5))
        if wh is None:
            return None
        if not _is_edit(upstream_model):
            return format_size(nearest_size(*wh, QWEN_IMAGE_SIZES), "*")
        return format_size(fit_within(*wh, multiple=8, lo=512, hi=2048), "*")

    def parameters(self, call: Call) -> dict[str, Any]:
        job, spec = call.job, self.spec(call.upstream_model)
        params: dict[str, Any] = {"n": call.n, "watermark": flag(job, "watermark") or False}
        if "size" in spec.params and (size := self._size(job, call.upstream_model)):
            params["size"] = size
        if job.seed is not None:  # DashScope takes 0..2^31-1: a negative int32 seed keeps its low 31 bits
            params["seed"] = job.seed & 0x7FFFFFFF
        if (extend := flag(job, "prompt_extend")) is not None:
            params["prompt_extend"] = extend
        if job.negative_prompt and _is_edit(call.upstream_model):
            params["negative_prompt"] = job.negative_prompt
        return params

    async def submit(self, call: Call) -> ProviderResult | Pending:
        if _is_edit(call.upstream_model):
            return await self._edit(call)
        job = call.job
        body = {"model": call.upstream_model,
                "input": {"prompt": job.prompt} | ({"negative_prompt": job.negative_prompt}
                                                   if job.negative_prompt else {}),
                "parameters": self.parameters(call)}
        reply = await self.send("POST", f"{self.base_url}/api/v1/services/aigc/text2image/image-synthesis",
                                json=body, headers=self._headers(**{"X-DashScope-Async": "enable"}))
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

    async def _edit(self, call: Call) -> ProviderResult:
        content: list[dict[str, str]] = [
            {"image": f"data:{img.mime};base64,{base64.b64encode(img.data).decode()}"} for img in call.images
        ]
        content.append({"text": call.job.prompt})
        body = {"model": call.upstream_model,
                "input": {"messages": [{"role": "user", "content": content}]},
                "parameters": self.parameters(call)}
        reply = await self.send("POST", f"{self.base_url}/api/v1/services/aigc/multimodal-generation/generation",
                                json=body, headers=self._headers())
        answer = self.parse(_Multimodal, reply).output
        return ProviderResult(images=[
            OutputImage(url=c.image) for choice in answer.choices for c in choice.message.content if c.image
        ])

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
