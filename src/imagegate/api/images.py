"""POST /v1/images/generations (JSON) and POST /v1/images/edits (multipart)."""

from __future__ import annotations

import base64
import time
from typing import Any

import orjson
from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException
from starlette.responses import Response

from imagegate import imaging
from imagegate.accounts import Principal
from imagegate.api.answer import Result, StreamEvents, answer, answer_stream
from imagegate.api.deps import StateDep, WorkPrincipalDep
from imagegate.api.parsing import check_reference_scheme, not_json
from imagegate.api.render import image_items
from imagegate.api.schemas import GenerationRequest, ImageRequest, ImagesResponse
from imagegate.core.errors import ImagegateError, InvalidRequest, PayloadTooLarge
from imagegate.core.job import ImageJob, ImageSource, Partial
from imagegate.core.spec import Action
from imagegate.state import AppState

router = APIRouter(tags=["images"])


def pydantic_error(exc: ValidationError) -> InvalidRequest:
    first = exc.errors()[0]
    param = ".".join(str(p) for p in first["loc"]) or None
    return InvalidRequest(f"{param or 'request'}: {first['msg']}", param=param)


def source_from_string(value: str, *, param: str, state: AppState) -> ImageSource:
    """A reference image given as text: an http(s) URL (fetched later, through the SSRF rules —
    checked here already so a literal private address is a 400 at once) or base64/data URI."""
    check_reference_scheme(value, param=param)
    if value.startswith(("http://", "https://")):
        if not state.urls.is_own(value):
            state.safe.check_url(value, param=param)
        return ImageSource(url=value)
    data = imaging.decode_base64_image(value, param=param, max_bytes=state.settings.limits.max_file_bytes)
    return ImageSource(data=data, mime=imaging.sniff_mime(data))


async def render(state: AppState, result: Result) -> dict[str, Any]:
    """An ``ImagesResponse``: the images as URLs or base64, as ``response_format`` asked."""
    body: dict[str, Any] = {"created": result.created,
                            "data": await image_items(state, result.delivered, result.job.response_format)}
    if result.usage is not None:
        body["usage"] = result.usage.model_dump(exclude_none=True)
    first = result.delivered[0]
    if first.width and first.height:
        body["size"] = f"{first.width}x{first.height}"
    body["output_format"] = first.mime.split("/")[-1]
    return body


_NO_USAGE = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0,
             "input_tokens_details": {"text_tokens": 0, "image_tokens": 0}}


def _event(kind: str, body: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **body}) + b"\n\n"


def stream_events(job: ImageJob) -> StreamEvents:
    """OpenAI's image streaming events (``ImageGenStreamEvent`` / ``ImageEditStreamEvent``):
    ``<prefix>.partial_image`` as they come, then one ``<prefix>.completed`` per image (with a
    URL instead of ``b64_json`` when ``response_format`` is ``url``: an extension), the job's
    usage on the last one; a failure after the stream started is an ``error`` event."""
    prefix = "image_generation" if job.action == "generate" else "image_edit"
    settings = {"background": job.background or "auto", "quality": job.quality or "auto"}

    def partial(p: Partial, index: int) -> bytes:
        b64 = p.b64 if p.b64 is not None else base64.b64encode(p.data or b"").decode()
        size = f"{p.width}x{p.height}" if p.width and p.height else job.size or "auto"
        return _event(f"{prefix}.partial_image", {
            "b64_json": b64, "partial_image_index": index, "created_at": int(time.time()), "size": size,
            "output_format": p.mime.split("/")[-1], **settings})

    async def done(state: AppState, result: Result) -> list[bytes]:
        items = await image_items(state, result.delivered, job.response_format)
        out = []
        for i, (item, d) in enumerate(zip(items, result.delivered, strict=True)):
            last = i == len(items) - 1
            usage = result.usage.model_dump(exclude_none=True) if last and result.usage is not None else _NO_USAGE
            out.append(_event(f"{prefix}.completed", {
                **item, "created_at": result.created, "output_format": d.mime.split("/")[-1],
                "size": f"{d.width}x{d.height}" if d.width and d.height else job.size or "auto",
                "usage": usage, **settings}))
        return out

    def error(exc: ImagegateError) -> list[bytes]:
        # The SDK raises ``APIError`` on a ``data`` object with an ``error`` key.
        return [b"event: error\ndata: " + orjson.dumps(exc.to_openai()) + b"\n\n"]

    return StreamEvents(partial=partial, done=done, error=error)


async def _answer(state: AppState, request: Request, job: ImageJob, principal: Principal,
                  stream: bool) -> Response:
    if stream:
        return await answer_stream(state, request, job, principal, stream_events(job))
    return await answer(state, request, job, principal, render)


@router.post(
    "/v1/images/generations",
    response_model=ImagesResponse,
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": GenerationRequest.model_json_schema()}}}},
    summary="Create images from a prompt (and optional reference images)",
)
async def generations(request: Request, state: StateDep, principal: WorkPrincipalDep) -> Response:
    # Parsed with pydantic-core straight from bytes: one pass over a possibly large base64 body.
    # Strict: a number field takes a JSON number of its type (no ``true``, ``"7"`` or ``1.5`` for n).
    try:
        req = GenerationRequest.model_validate_json(await request.body(), strict=True)
    except ValidationError as exc:
        if exc.errors()[0]["type"] == "json_invalid":
            raise not_json(request, exc.errors()[0]["msg"]) from exc
        raise pydantic_error(exc) from exc
    refs = req.image if isinstance(req.image, list) else [req.image] if req.image else []
    images = [source_from_string(v, param=f"image[{i}]", state=state) for i, v in enumerate(refs)]
    return await _answer(state, request, req.to_job("generate", images, None), principal, req.stream)


_FILE_FIELDS = ("image", "image[]", "mask")


@router.post(
    "/v1/images/edits",
    response_model=ImagesResponse,
    openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["image", "prompt", "model"],
        "properties": {
            "image": {"type": "array", "items": {"type": "string", "format": "binary"}},
            "mask": {"type": "string", "format": "binary"},
            **ImageRequest.model_json_schema()["properties"],
        }}}}}},
    summary="Edit images (several images, optional mask)",
)
async def edits(request: Request, state: StateDep, principal: WorkPrincipalDep) -> Response:
    limits = state.settings.limits
    try:
        form = await request.form(max_files=limits.max_files + 1, max_fields=200)
    except MultiPartException as exc:
        raise InvalidRequest(f"Could not read the multipart body: {exc.message}", param=None) from exc
    try:
        fields: dict[str, Any] = {}
        images: list[ImageSource] = []
        mask: ImageSource | None = None
        for name, value in form.multi_items():
            if name not in _FILE_FIELDS:
                fields[name] = value if isinstance(value, str) else None
                continue
            param = "mask" if name == "mask" else f"image[{len(images)}]"
            src = await _upload(value, param=param, state=state)
            if name == "mask":
                mask = src
            else:
                images.append(src)
        if len(images) > limits.max_files:
            raise InvalidRequest(f"At most {limits.max_files} images per request.", param="image")
        action: Action = "edit"
        try:
            req = ImageRequest.model_validate(fields)
        except ValidationError as exc:
            raise pydantic_error(exc) from exc
        job = req.to_job(action, images, mask)
    finally:
        await form.close()
    return await _answer(state, request, job, principal, req.stream)


async def _upload(value: UploadFile | str, *, param: str, state: AppState) -> ImageSource:
    if isinstance(value, str):
        return source_from_string(value, param=param, state=state)
    max_bytes = state.settings.limits.max_file_bytes
    if value.size is not None and value.size > max_bytes:
        raise PayloadTooLarge(f"{param} is larger than {max_bytes // 2**20} MB.", param=param)
    data = await value.read()
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"{param} is larger than {max_bytes // 2**20} MB.", param=param)
    if not data:
        raise InvalidRequest(f"{param} is empty.", param=param)
    # Format comes from the bytes, never from the filename or the declared content type.
    return ImageSource(data=data, mime=imaging.sniff_mime(data))
