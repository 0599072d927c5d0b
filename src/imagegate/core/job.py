"""The internal job: what every surface turns a request into, and what adapters give back.

An ``ImageJob`` is protocol-neutral and JSON-serialisable (async tasks persist it as-is; uploads
are stored as blobs first). Adapters receive a ``Call`` — the job plus the resolved input bytes
and the share of ``n`` this upstream call must produce — and answer with a ``ProviderResult``
or, for queue-style upstreams, a ``Pending`` handle that is polled later.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from imagegate.core.spec import Action, ModelSpec

ResponseFormat = Literal["url", "b64_json"]
Surface = Literal["images", "gemini", "chat"]


class ImageSource(BaseModel):
    """A reference image or mask as the caller gave it. Exactly one field is set.

    ``data`` lives only in memory (uploads on the sync path); the async path stores it as a blob
    before the job is persisted, so a persisted job only ever holds ``url`` or ``blob``.
    """

    model_config = ConfigDict(frozen=True)

    url: str | None = None
    blob: str | None = None
    data: bytes | None = Field(default=None, exclude=True, repr=False)
    mime: str | None = None


class NativeRequest(BaseModel):
    """A surface's own request body, kept so a same-protocol upstream can receive it faithfully
    (multi-turn Gemini ``contents``, generation settings). Other adapters ignore it."""

    protocol: Literal["gemini", "chat"]
    body: dict[str, Any]
    settings: list[str] = Field(default_factory=list)
    """Settings of the body no job field carries (``generationConfig.temperature`` …): an
    upstream of the same protocol receives them with the body; any other model reports them in
    ``x-imagegate-dropped-params``."""
    answer_text: bool = True
    """The caller takes text parts beside images (Gemini ``responseModalities``)."""


class ImageJob(BaseModel):
    """One image request, whatever surface it came through."""

    action: Action = "generate"
    model: str
    prompt: str
    n: int = 1
    size: str | None = None
    aspect_ratio: str | None = None
    image_size: str | None = None
    quality: str | None = None
    style: str | None = None
    background: str | None = None
    output_format: str | None = None
    output_compression: int | None = None
    moderation: str | None = None
    input_fidelity: str | None = None
    seed: int | None = None
    negative_prompt: str | None = None
    strength: float | None = None
    partial_images: int | None = None
    """Intermediate images a streamed answer may carry (0–3; OpenAI's ``partial_images``)."""
    user: str | None = None
    response_format: ResponseFormat = "url"
    images: list[ImageSource] = Field(default_factory=list)
    mask: ImageSource | None = None
    extra: dict[str, Any] = Field(default_factory=dict)
    """Model-specific parameters the public schema does not name (``substyle``, ``watermark`` …);
    each adapter reads the ones it declares and ignores the rest."""
    native: NativeRequest | None = None
    surface: Surface = "images"

    def given(self) -> set[str]:
        """Public parameters the caller actually set (for capability checks)."""
        names = {k for k in self.model_fields_set if getattr(self, k) not in (None, [], {})}
        return names | set(self.extra)


@dataclass(frozen=True)
class InputImage:
    """A resolved input: real bytes, sniffed and size-checked."""

    data: bytes
    mime: str
    width: int
    height: int
    has_alpha: bool = False


@dataclass(frozen=True)
class Call:
    """One upstream call of a job: ``n`` may be a share of ``job.n`` when the gateway fans out;
    ``spec`` is the catalog's word on the model, ``upstream_model`` its name on the wire."""

    job: ImageJob
    spec: ModelSpec
    upstream_model: str
    n: int
    images: tuple[InputImage, ...] = ()
    mask: InputImage | None = None
    on_partial: PartialSink | None = None
    """Set only when the caller streams: an adapter that can show work in progress hands each
    intermediate image here as it arrives (at most ``job.partial_images`` of them per image)."""


@dataclass(frozen=True)
class Partial:
    """An intermediate image of a streamed call: encoded bytes or base64 passed through."""

    data: bytes | None = None
    b64: str | None = None
    mime: str = "image/png"
    width: int | None = None
    height: int | None = None


PartialSink = Callable[[Partial], None]
"""Receives partial images; called on the event loop, must not block."""


class Usage(BaseModel):
    """Token usage in OpenAI's ``ImagesResponse.usage`` shape; unknown keys are kept."""

    model_config = ConfigDict(extra="allow")

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    input_tokens_details: dict[str, int] | None = None
    output_tokens_details: dict[str, int] | None = None

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
            input_tokens_details=_add_details(self.input_tokens_details, other.input_tokens_details),
            output_tokens_details=_add_details(self.output_tokens_details, other.output_tokens_details),
        )


def _add_details(a: dict[str, int] | None, b: dict[str, int] | None) -> dict[str, int] | None:
    if a is None or b is None:
        return a or b
    return {k: a.get(k, 0) + b.get(k, 0) for k in a.keys() | b.keys()}


@dataclass
class OutputImage:
    """One image an upstream produced: bytes, a base64 string passed through untouched, or an
    upstream URL the gateway downloads at once (upstream URLs expire in minutes)."""

    data: bytes | None = None
    b64: str | None = None
    url: str | None = None
    mime: str | None = None
    revised_prompt: str | None = None


@dataclass
class ProviderResult:
    images: list[OutputImage]
    usage: Usage | None = None
    text: str | None = None
    """Text the model wrote next to its images (Gemini, chat-served models)."""
    failures: list[str] = field(default_factory=list)
    """Per-image failures inside an otherwise successful answer (Ark ``data[].error``)."""
    model_version: str | None = None


@dataclass
class Pending:
    """A queue-style upstream accepted the call; ``handle`` (JSON-safe) is what ``poll`` needs."""

    handle: dict[str, Any]
    poll_after: float = 1.0
    progress: int = 20
