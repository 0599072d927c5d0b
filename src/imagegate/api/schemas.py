"""Public request schemas of the OpenAI Images surface (with the gateway's own extensions); its answer
is the OpenAI Images wire model itself (``imagegate.wire.openai_images.ImagesResponse``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from imagegate.core.job import ImageJob, ImageSource, ResponseFormat
from imagegate.core.spec import Action
from imagegate.routing import SEED_MAX, SEED_MIN
from imagegate.wire.openai_images import ImagesResponse as ImagesResponse  # the answer is the wire's own


class ImageRequest(BaseModel):
    """Fields shared by generations and edits. Unknown fields are kept and passed to models that
    understand them (see ``docs/models.md``). JSON bodies are validated in strict mode (a number
    field takes a JSON number of its type, never ``true`` or ``"7"``); multipart fields are text and
    are converted."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, description="A public model name (see GET /v1/models).")
    prompt: str = Field(min_length=1, description="What to draw or how to change the image.")
    n: int = Field(default=1, ge=1, le=10, description="Number of images.")
    size: str | None = Field(default=None, description="WxH; snapped to the nearest size the model makes.")
    aspect_ratio: str | None = Field(default=None, description="W:H, e.g. 16:9; wins over size.")
    image_size: Literal["1K", "2K", "4K"] | None = Field(default=None, description="nano-banana-2 only.")
    quality: str | None = None
    style: str | None = None
    background: Literal["transparent", "opaque", "auto"] | None = None
    output_format: Literal["png", "jpeg", "webp"] | None = None
    output_compression: int | None = Field(default=None, ge=0, le=100)
    moderation: Literal["low", "auto"] | None = None
    input_fidelity: Literal["high", "low"] | None = None
    seed: int | None = Field(default=None, ge=SEED_MIN, le=SEED_MAX,
                             description="32-bit signed; mapped onto what each upstream takes (docs/models.md).")
    negative_prompt: str | None = None
    strength: float | None = Field(default=None, ge=0, le=1, description="Image-to-image strength.")
    response_format: ResponseFormat = Field(default="url", description="url (served by this gateway) or b64_json.")
    user: str | None = None
    stream: bool = Field(default=False, description="Answer Server-Sent Events (partial images, then each image).")
    partial_images: int | None = Field(default=None, ge=0, le=3,
                                       description="Partial images a stream carries before each image (0-3).")

    def to_job(self, action: Action, images: list[ImageSource], mask: ImageSource | None) -> ImageJob:
        fields = self.model_dump(exclude_none=True, exclude={"image", "stream"})
        extra = dict(self.model_extra or {})
        extra.pop("image", None)
        for k in extra:
            fields.pop(k, None)
        return ImageJob(action=action, images=images, mask=mask, extra=extra, **fields)


class GenerationRequest(ImageRequest):
    image: list[str] | str | None = Field(
        default=None, description="Reference images: URLs, base64 or data URIs (models that take them).")


class TaskAccepted(BaseModel):
    task_id: str
    code: str = "success"
    message: str = ""
    data: str
