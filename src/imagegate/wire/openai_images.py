"""The OpenAI Images wire format, as pydantic models: the one definition used by the OpenAI Images
surface (``api/schemas.py`` answers in ``ImagesResponse``) and by every adapter of an
OpenAI-shaped upstream (``providers/openai.py``, ``recraft.py``, ``ark.py``), which build an
``ImagesRequest`` (or a vendor's subclass of it) and read the answer in these shapes.

Shapes follow OpenAI's ``CreateImageRequest`` / ``CreateImageEditRequest`` / ``ImagesResponse``
(github.com/openai/openai-openapi; ``openai/openai-python`` ``types/image_generate_params.py``,
``types/images_response.py``). Answers keep what OpenAI requires with defaults for what an
OpenAI-compatible upstream may leave out (Ark answers ``created_at``, not ``created``).

``DecodedImagesResponse`` is the fast path for an answer whose images will be stored:
pydantic-core decodes each ``b64_json`` straight out of the JSON bytes (no multi-megabyte Python
string, ~6x faster than ``base64.b64decode``; docs/benchmarks.md, scenario 2). A ``data:`` URI or
anything else that is not plain base64 fails it, and the adapter falls back to ``ImagesResponse``,
whose strings are passed through untouched.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from imagegate.core.job import OutputImage, ProviderResult, Usage

# ---- requests -----------------------------------------------------------------------------------


class ImagesRequest(BaseModel):
    """The body of ``POST /images/generations`` (JSON) or the fields of ``POST /images/edits``
    (multipart; the files travel beside them), as OpenAI names them. A vendor's own fields are
    declared by its subclass; here they are kept as extras (an OpenAI-compatible upstream with no
    special rules receives what the caller set, and judges it)."""

    model_config = ConfigDict(extra="allow")

    model: str
    prompt: str
    n: int | None = None
    size: str | None = None
    quality: str | None = None
    response_format: Literal["url", "b64_json"] | None = None
    style: str | None = None
    background: str | None = None
    output_format: str | None = None
    output_compression: int | None = None
    moderation: str | None = None
    input_fidelity: str | None = None
    user: str | None = None

    def body(self) -> dict[str, Any]:
        """The fields to send: everything set, nothing ``None``."""
        return self.model_dump(exclude_none=True)


# ---- answers ------------------------------------------------------------------------------------


class ImageDatum(BaseModel):
    """One image of an answer: base64 or a URL (which expires upstream), and the prompt the model
    actually drew (DALL·E 3)."""

    url: str | None = None
    b64_json: str | None = None
    revised_prompt: str | None = None


class ImagesResponse(BaseModel):
    """The answer of both endpoints (and of this gateway's OpenAI Images surface)."""

    created: int = 0
    data: list[ImageDatum]
    usage: Usage | None = None
    """Token usage (GPT image models)."""
    background: str | None = None
    output_format: str | None = None
    quality: str | None = None
    size: str | None = None


class DecodedDatum(BaseModel):
    model_config = ConfigDict(val_json_bytes="base64")

    b64_json: bytes | None = None
    url: str | None = None
    revised_prompt: str | None = None


class DecodedImagesResponse(BaseModel):
    """``ImagesResponse`` with each ``b64_json`` decoded to bytes while the JSON is parsed."""

    data: list[DecodedDatum]
    usage: Usage | None = None


class ErrorDetail(BaseModel):
    message: str = ""
    type: str | None = None
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    """``{"error": {"message", "type", "param", "code"}}`` (OpenAI; Ark answers the same shape)."""

    error: ErrorDetail


class ImageStreamEvent(BaseModel):
    """One Server-Sent Event of a streamed generation or edit (``stream: true``): OpenAI's
    ``ImageGenPartialImageEvent`` / ``ImageGenCompletedEvent`` (``image_generation.*``) and their
    ``image_edit.*`` twins — ``b64_json``, ``partial_image_index``, ``size``, ``quality``,
    ``background``, ``output_format``, ``created_at``; ``usage`` on the completed ones (per image).
    A failure after the stream started is an event with an ``error`` object. This gateway's own
    stream adds ``url`` to a completed event when the caller asked for ``response_format: url``."""

    model_config = ConfigDict(extra="allow")

    type: str = ""
    b64_json: str | None = None
    url: str | None = None
    partial_image_index: int | None = None
    size: str | None = None
    quality: str | None = None
    background: str | None = None
    output_format: str | None = None
    created_at: int | None = None
    usage: Usage | None = None
    error: ErrorDetail | None = None

    @property
    def partial(self) -> bool:
        return self.type.endswith(".partial_image")

    @property
    def completed(self) -> bool:
        return self.type.endswith(".completed")


def sse_events(buffer: bytearray) -> list[bytes]:
    """Take the complete events out of ``buffer`` (bytes read so far, ``\\r`` removed); each is
    its ``data`` (several ``data:`` lines joined by newlines). Comments and other fields are skipped."""
    out: list[bytes] = []
    while (end := buffer.find(b"\n\n")) >= 0:
        block = bytes(buffer[:end])
        del buffer[:end + 2]
        data = [line[5:].lstrip(b" ") if line.startswith(b"data:") else None for line in block.split(b"\n")]
        lines = [d for d in data if d is not None]
        if lines:
            out.append(b"\n".join(lines))
    return out


def decoded_images(body: bytes) -> ProviderResult | None:
    """The fast path, for images that will be stored: an upstream's answer with each ``b64_json``
    decoded while the JSON is parsed; ``None`` when that fails (a ``data:`` URI, a malformed body),
    and the caller reads it with ``ImagesResponse`` instead."""
    try:
        answer = DecodedImagesResponse.model_validate_json(body)
    except ValueError:
        return None
    return ProviderResult(usage=answer.usage, images=[
        OutputImage(data=d.b64_json, url=None if d.b64_json else d.url, revised_prompt=d.revised_prompt)
        for d in answer.data if d.b64_json or d.url])


def images_of(answer: ImagesResponse, *, mime: str | None = None) -> ProviderResult:
    """An upstream's answer with each ``b64_json`` passed through untouched (the caller asked for
    base64), labelled with the answer's ``output_format`` or else ``mime``."""
    if answer.output_format:
        mime = f"image/{answer.output_format}".replace("jpg", "jpeg")
    return ProviderResult(usage=answer.usage, images=[
        OutputImage(b64=d.b64_json, url=None if d.b64_json else d.url, mime=mime if d.b64_json else None,
                    revised_prompt=d.revised_prompt)
        for d in answer.data if d.b64_json or d.url])
