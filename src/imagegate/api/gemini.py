"""Gemini's native ``generateContent`` for every image model of the catalog.

``POST /v1beta/models/{model}:generateContent`` and ``:streamGenerateContent?alt=sse``, and the
same under ``/v1/models/...`` (google-genai 1.x+ defaults to API version ``v1``). ``{model}`` is
any public model name, or a Google image model name mapped onto the nano-banana family.

The request becomes the same ``ImageJob`` the images endpoints run: the last user turn's text
is the prompt and its ``inlineData``/``fileData`` parts the reference images (with none, the most
recent image of an earlier turn, so a multi-turn "now make it purple" edits the last picture);
``generationConfig.imageConfig`` gives ``aspect_ratio``/``image_size`` and ``candidateCount``
gives ``n``. The original body travels as ``job.native`` so a Gemini upstream receives every
turn and setting; the ``generationConfig`` settings no job field holds are named in
``job.native.settings``, so any other model reports them as dropped. Errors are rendered in
Google's shape by ``api/errors.py``; a refusal is not an error to a Google client but a 200 with
``promptFeedback.blockReason`` or a candidate whose ``finishReason`` says why — rendered so here
(the gateway has already released the hold).
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.responses import Response

from imagegate import imaging
from imagegate.api import sse
from imagegate.api.answer import Result, answer, new_request_id
from imagegate.api.conversation import fit_references, public_model
from imagegate.api.deps import StateDep, WorkPrincipalDep
from imagegate.api.errors import GOOGLE_STATUS
from imagegate.api.images import pydantic_error, source_from_string
from imagegate.api.parsing import async_flag, json_object
from imagegate.api.render import image_items
from imagegate.core.errors import (
    ContentRefused,
    ImagegateError,
    InvalidRequest,
    NoImageReturned,
)
from imagegate.core.job import ImageJob, ImageSource, NativeRequest, Usage
from imagegate.gateway import Outcome
from imagegate.routing import PUBLIC_MAX_N
from imagegate.state import AppState
from imagegate.wire.chat import model_text
from imagegate.wire.gemini import (
    Blob,
    Candidate,
    Content,
    GenerateContentRequest,
    GenerateContentResponse,
    GenerationConfig,
    ModalityTokenCount,
    Part,
    PromptFeedback,
    UsageMetadata,
)

router = APIRouter(tags=["gemini"])

MODALITIES = ("TEXT", "IMAGE", "AUDIO", "VIDEO")
# The enums google-genai knows (types.FinishReason / types.BlockedReason): any other value makes
# the SDK warn, so reasons from other upstreams are mapped onto these.
FINISH_REASONS = frozenset({
    "FINISH_REASON_UNSPECIFIED", "STOP", "MAX_TOKENS", "SAFETY", "RECITATION", "LANGUAGE", "OTHER",
    "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "MALFORMED_FUNCTION_CALL", "IMAGE_SAFETY",
    "UNEXPECTED_TOOL_CALL", "TOO_MANY_TOOL_CALLS", "IMAGE_PROHIBITED_CONTENT", "NO_IMAGE",
    "IMAGE_RECITATION", "IMAGE_OTHER",
})
BLOCK_REASONS = frozenset({"BLOCKED_REASON_UNSPECIFIED", "SAFETY", "OTHER", "BLOCKLIST", "PROHIBITED_CONTENT",
                           "IMAGE_SAFETY"})


async def generate_content(model: str, request: Request, state: StateDep, principal: WorkPrincipalDep) -> Response:
    job = await parse(model, request, state)
    return await answer(state, request, job, principal, render, refusal=refusal)


async def render(state: AppState, result: Result) -> dict[str, Any]:
    """A ``GenerateContentResponse`` with the images inline (sync answers and async tasks)."""
    return await Reply(state, result.job, result.id).whole(result)


def refusal(exc: ContentRefused | NoImageReturned, job: ImageJob, request_id: str) -> dict[str, Any]:
    return Reply(None, job, request_id).refusal(exc)


async def stream_generate_content(model: str, request: Request, state: StateDep,
                                  principal: WorkPrincipalDep) -> Response:
    if async_flag(request):
        raise InvalidRequest("async=true is for :generateContent; a stream answers as it goes.", param="async")
    job = await parse(model, request, state)
    principal.require_model(job.model)
    request_id = new_request_id()
    reply = Reply(state, job, request_id)
    try:
        task = await sse.start(state.gateway.execute(job, principal, request_id=request_id))
    except (ContentRefused, NoImageReturned) as exc:
        return sse.fixed([_event(reply.refusal(exc))], headers={"x-request-id": request_id})

    async def render(outcome: Outcome) -> list[bytes]:
        return [_event(chunk) for chunk in await reply.chunks(Result.of(outcome, job, request_id))]

    def render_error(exc: ImagegateError) -> list[bytes]:
        if isinstance(exc, ContentRefused | NoImageReturned):
            return [_event(reply.refusal(exc))]
        # What Google sends when a stream fails after it started; google-genai raises APIError.
        return [_event({"error": {"code": exc.status, "message": exc.message,
                                  "status": GOOGLE_STATUS.get(exc.status, "UNKNOWN")}})]

    # A blank line is a valid SSE no-op; google-genai would choke on a ``:`` comment line.
    response = sse.stream(task, head=[], keepalive=b"\r\n", render=render, render_error=render_error, tail=[])
    response.headers["x-request-id"] = request_id
    return response


for _prefix in ("/v1beta", "/v1"):
    router.add_api_route(f"{_prefix}/models/{{model}}:generateContent", generate_content, methods=["POST"],
                         summary="Gemini generateContent with any image model")
    router.add_api_route(f"{_prefix}/models/{{model}}:streamGenerateContent", stream_generate_content,
                         methods=["POST"], summary="Gemini streamGenerateContent (alt=sse) with any image model")


# ---- request ------------------------------------------------------------------------------------

async def parse(model: str, request: Request, state: AppState) -> ImageJob:
    """The job of a ``generateContent`` body (``native.answer_text``: whether text parts may be
    answered)."""
    public = public_model(model.removeprefix("models/"), state.router)
    body = await json_object(request)
    try:  # strict: candidateCount and seed are JSON integers (not true, "2" or 1.5)
        req = GenerateContentRequest.model_validate(body, strict=True)
    except ValidationError as exc:
        raise pydantic_error(exc) from exc
    config = req.generation_config or GenerationConfig()
    modalities = [m.upper() for m in config.response_modalities or ["TEXT", "IMAGE"]]
    if bad := [m for m in modalities if m not in MODALITIES]:
        raise InvalidRequest(f"Unknown response modality {bad[0]!r}.", param="generationConfig.responseModalities")
    if "IMAGE" not in modalities:
        raise InvalidRequest("This gateway draws images: responseModalities must include IMAGE.",
                             param="generationConfig.responseModalities")
    n = config.candidate_count or 1  # 0 is proto3's "unset": Google's default of one
    if not 1 <= n <= PUBLIC_MAX_N:
        raise InvalidRequest(f"candidateCount must be between 1 and {PUBLIC_MAX_N}.",
                             param="generationConfig.candidateCount")
    prompt, images, implicit = _prompt_and_images(req, state)
    image_config = config.image_config
    fields: dict[str, Any] = {}
    if image_config is not None and image_config.aspect_ratio:
        fields["aspect_ratio"] = image_config.aspect_ratio
    if image_config is not None and image_config.image_size:
        fields["image_size"] = image_config.image_size
    if config.seed is not None:
        fields["seed"] = config.seed
    native = NativeRequest(protocol="gemini", body=body, settings=_unmapped_settings(config),
                           answer_text="TEXT" in modalities)
    job = ImageJob(model=public, prompt=prompt, n=n, images=images, response_format="b64_json",
                   surface="gemini", native=native, **fields)
    return fit_references(state.router, job, implicit)


def _unmapped_settings(config: GenerationConfig) -> list[str]:
    """``generationConfig`` settings no job field carries (``temperature``, ``topK``,
    ``imageConfig.personGeneration`` …), named as sent: a Gemini upstream receives them with the
    body, any other model reports them as dropped."""
    names = [f"generationConfig.{k}" for k in config.model_extra or {}]
    if config.image_config is not None:
        names += [f"generationConfig.imageConfig.{k}" for k in config.image_config.model_extra or {}]
    return names


def _prompt_and_images(req: GenerateContentRequest, state: AppState) -> tuple[str, list[ImageSource], bool]:
    if not req.contents:
        raise InvalidRequest("contents must not be empty.", param="contents")
    last = next((i for i in range(len(req.contents) - 1, -1, -1) if req.contents[i].role in (None, "user")), None)
    if last is None:
        raise InvalidRequest("contents must contain a user turn: it is the prompt.", param="contents")
    texts: list[str] = []
    images: list[ImageSource] = []
    for j, part in enumerate(req.contents[last].parts):
        where = f"contents[{last}].parts[{j}]"
        if part.thought:
            continue
        if part.text is not None:
            texts.append(part.text)
        elif (src := _image(part, where, state)) is not None:
            images.append(src)
        else:
            raise InvalidRequest("Only text, inlineData and fileData parts are understood by image models.",
                                 param=where)
    prompt = "\n".join(t.strip() for t in texts if t.strip())
    if not prompt:
        raise InvalidRequest("The last user turn has no text; say what to draw or change.",
                             param=f"contents[{last}].parts")
    if images:
        return prompt, images, False
    for i in range(last - 1, -1, -1):
        earlier = [(j, p) for j, p in enumerate(req.contents[i].parts)
                   if not p.thought and (p.inline_data is not None or p.file_data is not None)]
        if earlier:
            j, part = earlier[-1]
            src = _image(part, f"contents[{i}].parts[{j}]", state)
            return prompt, [src] if src is not None else [], True
    return prompt, [], False


def _image(part: Part, where: str, state: AppState) -> ImageSource | None:
    if part.inline_data is not None:
        if not part.inline_data.mime_type.lower().startswith("image/"):
            raise InvalidRequest(f"inlineData of type {part.inline_data.mime_type!r} is not an image.",
                                 param=f"{where}.inlineData.mimeType")
        data = imaging.decode_base64_image(part.inline_data.data, param=f"{where}.inlineData.data",
                                           max_bytes=state.settings.limits.max_file_bytes)
        return ImageSource(data=data, mime=imaging.sniff_mime(data))
    if part.file_data is not None:
        uri, param = part.file_data.file_uri, f"{where}.fileData.fileUri"
        if not uri.startswith(("http://", "https://")):
            raise InvalidRequest("fileData.fileUri must be an http(s) URL this gateway can fetch.", param=param)
        return source_from_string(uri, param=param, state=state)
    return None


# ---- response -----------------------------------------------------------------------------------

class Reply:
    """Renders one job's outcome (or refusal) as ``GenerateContentResponse`` bodies."""

    def __init__(self, state: AppState | None, job: ImageJob, request_id: str) -> None:
        self.state, self.job = state, job
        self.text_wanted = job.native.answer_text if job.native is not None else True
        self.response_id = request_id[:20]

    def _body(self, candidates: list[Candidate], usage: UsageMetadata | None = None,
              feedback: PromptFeedback | None = None) -> dict[str, Any]:
        return GenerateContentResponse(candidates=candidates, prompt_feedback=feedback, usage_metadata=usage,
                                       model_version=self.job.model, response_id=self.response_id).wire()

    async def _candidates(self, outcome: Result) -> list[list[Part]]:
        assert self.state is not None
        items = await image_items(self.state, outcome.delivered, "b64_json")
        images = [Part(inline_data=Blob(mime_type=d.mime, data=str(item["b64_json"]).split(",", 1)[-1]))
                  for d, item in zip(outcome.delivered, items, strict=True)]
        groups = [images] if self.job.n == 1 else [[img] for img in images]
        if self.text_wanted and (text := model_text(outcome.text)):
            groups[0] = [Part(text=text), *groups[0]]
        return groups

    async def whole(self, outcome: Result) -> dict[str, Any]:
        groups = await self._candidates(outcome)
        return self._body([Candidate(content=Content(role="model", parts=parts), finish_reason="STOP", index=i)
                           for i, parts in enumerate(groups)], usage_metadata(outcome.usage))

    async def chunks(self, outcome: Result) -> list[dict[str, Any]]:
        """One chunk per part (text first, then each image); the last part of each candidate
        carries ``finishReason`` and the last chunk the usage, as Google streams them."""
        groups = await self._candidates(outcome)
        out: list[dict[str, Any]] = []
        for i, parts in enumerate(groups):
            for k, part in enumerate(parts):
                finish = "STOP" if k == len(parts) - 1 else None
                out.append(self._body([Candidate(content=Content(role="model", parts=[part]),
                                                 finish_reason=finish, index=i)]))
        out[-1]["usageMetadata"] = usage_metadata(outcome.usage).wire()
        return out

    def refusal(self, exc: ContentRefused | NoImageReturned) -> dict[str, Any]:
        """A refused or imageless answer as Google gives it: a blocked prompt has no candidate
        and a ``promptFeedback.blockReason``; otherwise one candidate without an image whose
        ``finishReason`` (and ``finishMessage``) says why."""
        if isinstance(exc, ContentRefused) and exc.prompt_blocked:
            reason = exc.reason if exc.reason in BLOCK_REASONS else "SAFETY"
            return self._body([], UsageMetadata(),
                              PromptFeedback(block_reason=reason, block_reason_message=exc.message))
        if isinstance(exc, ContentRefused):
            reason = exc.reason if exc.reason in FINISH_REASONS else "SAFETY"
        else:  # "STOP" without an image is the model declining: say so in Google's own word
            reason = exc.reason if exc.reason in FINISH_REASONS - {"STOP"} else "NO_IMAGE"
        # google-genai drops ``finishMessage`` on the Gemini API (only Vertex maps it), so the
        # explanation is also a text part when text was asked for, as Gemini itself answers.
        content = Content(role="model", parts=[Part(text=exc.message)]) if self.text_wanted else None
        return self._body([Candidate(content=content, finish_reason=reason, finish_message=exc.message, index=0)],
                          UsageMetadata())


def usage_metadata(usage: Usage | None) -> UsageMetadata:
    """``Outcome.usage`` (OpenAI-shaped; reasoning counted as output) back in Google's shape."""
    if usage is None:
        return UsageMetadata()
    out_details = dict(usage.output_tokens_details or {})
    thoughts = out_details.pop("reasoning_tokens", 0)
    return UsageMetadata(
        prompt_token_count=usage.input_tokens, candidates_token_count=usage.output_tokens - thoughts,
        thoughts_token_count=thoughts, total_token_count=usage.total_tokens or usage.input_tokens + usage.output_tokens,
        prompt_tokens_details=_modalities(usage.input_tokens_details),
        candidates_tokens_details=_modalities(out_details))


def _modalities(details: dict[str, int] | None) -> list[ModalityTokenCount]:
    return [ModalityTokenCount(modality=k.removesuffix("_tokens").upper(), token_count=v)
            for k, v in (details or {}).items() if k.endswith("_tokens") and v]


def _event(body: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(body) + b"\r\n\r\n"
