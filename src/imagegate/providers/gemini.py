"""Google Gemini image models ("Nano Banana") over ``generateContent``.

Wire contract: the Gemini API docs (ai.google.dev) and the official SDK ``googleapis/python-genai``;
wire models in ``imagegate/wire/gemini.py`` (shared with the Gemini surface). What each model
accepts — aspect ratios, ``imageSize`` tiers, reference images — is its catalog entry
(``catalog.yaml``, section ``gemini``; an operator adds a model under ``catalog:``); this module
only translates.

- One call makes one image (``max_n: 1``; the gateway fans ``n`` out in parallel).
- ``size``/``aspect_ratio`` become ``imageConfig.aspectRatio``, the nearest of the entry's
  ``aspect_ratios``; with neither, the model picks (it follows the reference image's shape).
- ``image_size`` goes out as ``imageConfig.imageSize`` — unless the entry lists a single tier
  (``gemini-2.5-flash-image``: 1K), which is what the model draws anyway and is not sent. The
  gateway has already refused a tier the entry does not list, and applied the entry's
  ``defaults`` (``gemini-3-pro-image-preview@4K`` pins 4K for ``nano-banana-hd``; an explicit
  ``image_size`` wins).
- A 200 answer without an image is a failure: a blocked prompt or a safety/policy
  ``finishReason`` is ``ContentRefused`` (400), anything else ``NoImageReturned`` (502), both
  carrying Google's reason word and the model's own explanation.
- Passthrough: a job that came through the Gemini surface (``job.native``) is sent with the
  caller's own ``contents``, ``generationConfig``, ``safetySettings`` … (see
  ``GeminiAdapter.build_request``).
"""

from __future__ import annotations

import base64

import orjson
from pydantic import ValidationError

from imagegate.core import errors
from imagegate.core.errors import ContentRefused, InvalidRequest, NoImageReturned
from imagegate.core.geometry import nearest_ratio, requested_ratio
from imagegate.core.job import Call, ImageJob, OutputImage, ProviderResult, Usage
from imagegate.core.spec import ModelSpec
from imagegate.providers.base import Adapter, Reply
from imagegate.wire.gemini import (
    REFUSAL_REASONS,
    Blob,
    Content,
    GenerateContentRequest,
    GenerateContentResponse,
    GenerationConfig,
    GoogleErrorBody,
    ImageConfig,
    ModalityTokenCount,
    Part,
    UsageMetadata,
)

API_VERSION = "v1beta"


def _aspect_ratio(job: ImageJob, spec: ModelSpec) -> str | None:
    ratios = spec.aspect_ratios
    if ratios is None:  # an entry that lists none: the caller's ratio as given, if any
        return job.aspect_ratio
    if job.aspect_ratio in ratios:
        return job.aspect_ratio
    ratio = requested_ratio(job.size, job.aspect_ratio)
    return nearest_ratio(ratio, ratios) if ratio is not None else None


def _image_size(job: ImageJob, spec: ModelSpec) -> str | None:
    # A model with one tier draws it whatever is asked: nothing to send (keeps requests to
    # gemini-2.5-flash-image, which documents no imageSize, as Google's own examples write them).
    # A model with none has had the parameter reported as dropped.
    if spec.image_sizes is None or len(spec.image_sizes) < 2:
        return None
    return job.image_size


def _inline(call: Call) -> list[Part]:
    return [Part(inline_data=Blob(mime_type=img.mime, data=base64.b64encode(img.data).decode()))
            for img in call.images]


def read_answer(answer: GenerateContentResponse) -> ProviderResult:
    """Images, text and usage of an answer; an answer without an image raises."""
    feedback = answer.prompt_feedback
    if feedback is not None and feedback.block_reason:
        why = feedback.block_reason_message or "The prompt was blocked by the upstream's safety filters."
        raise ContentRefused(f"{why} (blockReason {feedback.block_reason})", reason=feedback.block_reason,
                             prompt_blocked=True)
    images: list[OutputImage] = []
    texts: list[str] = []
    for cand in answer.candidates:
        for part in cand.content.parts if cand.content else []:
            if part.thought:  # Gemini 3 "thinking" drafts are not the answer
                continue
            if part.inline_data is not None and part.inline_data.mime_type.startswith("image/"):
                images.append(OutputImage(b64=part.inline_data.data, mime=part.inline_data.mime_type))
            elif part.text:
                texts.append(part.text)
    text = "\n".join(texts) or None
    if not images:
        reason = next((c.finish_reason for c in answer.candidates if c.finish_reason), None) or "NO_IMAGE"
        said = next((c.finish_message for c in answer.candidates if c.finish_message), None) or text
        detail = f": {said}" if said else "."
        if reason in REFUSAL_REASONS:
            raise ContentRefused(f"The upstream refused to draw this (finishReason {reason}){detail}",
                                 reason=reason)
        raise NoImageReturned(f"The model answered without an image (finishReason {reason}){detail}",
                              reason=reason)
    usage = _usage(answer.usage_metadata) if answer.usage_metadata else None
    return ProviderResult(images=images, usage=usage, text=text, model_version=answer.model_version)


def _usage(meta: UsageMetadata) -> Usage:
    def by_modality(details: list[ModalityTokenCount]) -> dict[str, int]:
        counts = {"text_tokens": 0, "image_tokens": 0}
        for d in details:
            if d.modality:
                key = f"{d.modality.lower()}_tokens"
                counts[key] = counts.get(key, 0) + d.token_count
        return counts

    output_details = by_modality(meta.candidates_tokens_details)
    if meta.thoughts_token_count:
        output_details["reasoning_tokens"] = meta.thoughts_token_count
    # Google bills thinking tokens as output; they are in totalTokenCount but not in
    # candidatesTokenCount, so they are added here to keep input + output == total.
    return Usage(input_tokens=meta.prompt_token_count,
                 output_tokens=meta.candidates_token_count + meta.thoughts_token_count,
                 total_tokens=meta.total_token_count,
                 input_tokens_details=by_modality(meta.prompt_tokens_details),
                 output_tokens_details=output_details)


class GeminiAdapter(Adapter):
    """Gemini API ``generateContent`` for the Nano Banana image models."""

    provider = "gemini"
    key_env = "GEMINI_API_KEY"
    default_base_url = "https://generativelanguage.googleapis.com"

    def build_request(self, call: Call) -> GenerateContentRequest:
        """The ``generateContent`` body for one call.

        A job from the Gemini surface (``job.native``) keeps the caller's body — every turn, part
        and top-level field — and only what the job sets explicitly is overridden: aspect ratio,
        image size, seed. ``candidateCount`` is removed because the gateway fans ``n`` out itself.
        The native ``contents`` already hold the caller's images, so ``call.images`` is not added —
        except that ``fileData`` URLs of the last user turn, which the gateway fetched through its
        SSRF rules (and which Google may not be able to reach, or accept), are sent as the fetched
        bytes. Any other job becomes one user turn: the reference images as ``inlineData``, then the
        text.
        """
        job = call.job
        if job.native is not None and job.native.protocol == "gemini":
            try:
                req = GenerateContentRequest.model_validate(job.native.body)
            except ValidationError as exc:
                raise InvalidRequest(f"Not a generateContent body: {exc.errors()[0]['msg']}",
                                     param="contents") from exc
            config = req.generation_config or GenerationConfig()
            users = [c for c in req.contents if c.role in (None, "user")]
            if users and call.images and any(p.file_data is not None for p in users[-1].parts):
                rest = [p for p in users[-1].parts if p.file_data is None and p.inline_data is None]
                users[-1].parts = [*_inline(call), *rest]
        else:
            req = GenerateContentRequest(contents=[Content(role="user", parts=[*_inline(call), Part(text=job.prompt)])])
            config = GenerationConfig()
        config.candidate_count = None
        config.response_modalities = config.response_modalities or ["TEXT", "IMAGE"]
        if job.seed is not None:
            config.seed = job.seed
        image_config = config.image_config or ImageConfig()
        if ratio := _aspect_ratio(job, call.spec):
            image_config.aspect_ratio = ratio
        if size := _image_size(job, call.spec):
            image_config.image_size = size
        if image_config.aspect_ratio or image_config.image_size or image_config.model_extra:
            config.image_config = image_config
        req.generation_config = config
        return req

    async def submit(self, call: Call) -> ProviderResult:
        reply = await self.send(
            "POST", f"{self.base_url}/{API_VERSION}/models/{call.upstream_model}:generateContent",
            json=self.build_request(call).wire(), headers={"x-goog-api-key": self.channel.api_key or ""},
        )
        return read_answer(self.parse(GenerateContentResponse, reply))

    def error_message(self, reply: Reply) -> str:
        body = _google_error(reply)
        if body is None:
            return super().error_message(reply)
        status = f"{body.error.status}: " if body.error.status else ""
        return f"{status}{body.error.message}"

    def error_for(self, reply: Reply) -> errors.UpstreamError:
        # Google answers a wrong API key with 400 INVALID_ARGUMENT (reason API_KEY_INVALID), not
        # 401: without this the caller would be told their request was invalid.
        body = _google_error(reply)
        if body is not None and any(d.reason == "API_KEY_INVALID" for d in body.error.details):
            return super().error_for(Reply(401, reply.body, reply.content_type))
        return super().error_for(reply)


def _google_error(reply: Reply) -> GoogleErrorBody | None:
    try:
        return GoogleErrorBody.model_validate_json(reply.body)
    except (ValidationError, orjson.JSONDecodeError, ValueError):
        return None
