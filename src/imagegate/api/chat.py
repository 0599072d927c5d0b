"""POST /v1/chat/completions for image models: the surface of clients that only speak chat.

The last user message is the prompt; its ``image_url`` parts (and markdown images in its text)
are reference images. With none, the most recent image earlier in the conversation — usually the
picture the assistant answered with — is the reference, so "now make the sky purple" edits the
last picture: the generate-then-refine loop. The answer is an ordinary chat completion whose
content carries each image as a markdown link to this gateway. The job itself is the same
``ImageJob`` the images endpoints run (same routing, failover, billing, storage); the original
body travels along as ``job.native`` for chat-protocol upstreams.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.responses import Response

from imagegate.api import sse
from imagegate.api.answer import Result, answer, new_request_id
from imagegate.api.conversation import fit_references, public_model
from imagegate.api.deps import StateDep, WorkPrincipalDep
from imagegate.api.images import pydantic_error, source_from_string
from imagegate.api.parsing import async_flag, json_object
from imagegate.api.render import answer_headers, blob_url
from imagegate.api.schemas import ImageRequest
from imagegate.core.errors import ImagegateError, InvalidRequest, ModelNotFound
from imagegate.core.job import ImageJob, ImageSource, NativeRequest, Usage
from imagegate.gateway import Outcome
from imagegate.state import AppState
from imagegate.wire.chat import (
    MARKDOWN_IMAGE,
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    ChatUsage,
    Choice,
    ChunkChoice,
    Delta,
    find_images,
    model_text,
)

router = APIRouter(tags=["chat"])

# The chat protocol's own settings (OpenAI's CreateChatCompletionRequest): accepted and ignored,
# as an image model has no use for them. Every other body field is an image parameter
# (``extra_body`` in the OpenAI SDK), validated as on /v1/images/generations, so a model that
# ignores one reports it in ``x-imagegate-dropped-params``. ``seed`` and ``user`` mean the same
# in both and are image parameters.
CHAT_SETTINGS = frozenset({
    "model", "messages", "n", "stream", "stream_options", "response_format", "temperature", "top_p",
    "max_tokens", "max_completion_tokens", "frequency_penalty", "presence_penalty", "logit_bias", "logprobs",
    "top_logprobs", "stop", "tools", "tool_choice", "parallel_tool_calls", "functions", "function_call",
    "modalities", "audio", "metadata", "store", "reasoning_effort", "service_tier", "prediction",
    "web_search_options", "verbosity", "prompt_cache_key", "safety_identifier",
})


@router.post(
    "/v1/chat/completions",
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": ChatCompletionRequest.model_json_schema()}}}},
    summary="Draw with an image model through chat completions (stream: true supported)",
)
async def completions(request: Request, state: StateDep, principal: WorkPrincipalDep) -> Response:
    body = await json_object(request)
    try:  # strict: n is a JSON integer (not true, "2" or 1.5)
        req = ChatCompletionRequest.model_validate(body, strict=True)
    except ValidationError as exc:
        raise pydantic_error(exc) from exc
    try:
        model = public_model(req.model, state.router)
    except ModelNotFound as exc:
        raise ModelNotFound(
            f"The model {req.model!r} is not an image model served here: chat completions on this gateway "
            "draw with image models only (see GET /v1/models).", param="model") from exc
    job = fit_references(state.router, *to_job(req, model, body, state))
    if not req.stream:
        return await answer(state, request, job, principal, render)
    if async_flag(request):
        raise InvalidRequest("async=true cannot be combined with stream: true: a task is read back later, a "
                             "stream as it goes.", param="async")
    principal.require_model(model)
    request_id = new_request_id()
    completion_id = f"chatcmpl-{request_id}"
    headers = answer_headers(request_id)
    task = await sse.start(state.gateway.execute(job, principal, request_id=request_id))
    created = int(time.time())

    def chunk(choices: list[ChunkChoice], usage: ChatUsage | None = None) -> bytes:
        payload = ChatCompletionChunk(id=completion_id, created=created, model=req.model,
                                      choices=choices, usage=usage)
        return b"data: " + orjson.dumps(payload.model_dump(exclude_none=True)) + b"\n\n"

    async def render_stream(outcome: Outcome) -> list[bytes]:
        texts = contents(state, outcome, job.n)
        out = [chunk([ChunkChoice(index=i, delta=Delta(content=t))]) for i, t in enumerate(texts)]
        out += [chunk([ChunkChoice(index=i, delta=Delta(), finish_reason="stop")]) for i in range(len(texts))]
        if req.stream_options is not None and req.stream_options.include_usage:
            out.append(chunk([], chat_usage(outcome.usage)))
        return out

    def render_error(exc: ImagegateError) -> list[bytes]:
        # What OpenAI sends when a stream fails after it started; the SDK raises ``APIError``.
        return [b"data: " + orjson.dumps(exc.to_openai()) + b"\n\n"]

    response = sse.stream(
        task, head=[chunk([ChunkChoice(index=0, delta=Delta(role="assistant", content=""))])],
        keepalive=b": keep-alive\n\n", render=render_stream, render_error=render_error, tail=[b"data: [DONE]\n\n"])
    response.headers.update(headers)
    return response


async def render(state: AppState, result: Result) -> dict[str, Any]:
    """A ``chat.completion`` whose message links the images (sync answers and async tasks); the
    model is named as the caller named it (a Google alias stays one)."""
    job = result.job
    asked = job.native.body.get("model", job.model) if job.native is not None else job.model
    completion = ChatCompletion(
        id=f"chatcmpl-{result.id}", created=result.created, model=str(asked), usage=chat_usage(result.usage),
        choices=[Choice(index=i, message=AssistantMessage(content=c))
                 for i, c in enumerate(contents(state, result, job.n))])
    return completion.model_dump()


def to_job(req: ChatCompletionRequest, model: str, body: dict[str, Any], state: AppState) -> tuple[ImageJob, bool]:
    """The ``ImageJob`` a conversation asks for (see the module docstring), and whether its
    reference image was taken from the history rather than given with the prompt."""
    last = next((i for i in range(len(req.messages) - 1, -1, -1) if req.messages[i].role == "user"), None)
    if last is None:
        raise InvalidRequest("messages must contain a user message: it is the prompt.", param="messages")
    prompt, urls = prompt_and_images(req.messages[last], f"messages[{last}]")
    if not prompt:
        raise InvalidRequest("The last user message has no text; say what to draw or change.",
                             param=f"messages[{last}].content")
    images = [source_from_string(url, param=param, state=state) for url, param in urls]
    implicit = not images
    if implicit:
        images = earlier_image(req.messages[:last], state)
    params = {k: v for k, v in body.items() if k not in CHAT_SETTINGS}
    try:
        image_request = ImageRequest.model_validate({**params, "model": model, "prompt": prompt, "n": req.n or 1,
                                                     "response_format": "url"}, strict=True)
    except ValidationError as exc:
        raise pydantic_error(exc) from exc
    job = image_request.to_job("generate", images, None).model_copy(
        update={"surface": "chat", "native": NativeRequest(protocol="chat", body=body)})
    return job, implicit and bool(images)


def prompt_and_images(message: ChatMessage, where: str) -> tuple[str, list[tuple[str, str]]]:
    """The text of the prompt message, and its images as (url, param) pairs."""
    if message.content is None:
        return "", []
    if isinstance(message.content, str):
        return _split_markdown(message.content, f"{where}.content")
    texts: list[str] = []
    urls: list[tuple[str, str]] = []
    for j, part in enumerate(message.content):
        param = f"{where}.content[{j}]"
        if part.type == "text":
            text, found = _split_markdown(part.text or "", param)
            texts.append(text)
            urls += found
        elif part.type == "image_url" and part.url():
            urls.append((part.url() or "", f"{param}.image_url"))
        else:
            raise InvalidRequest(f"Content parts of type {part.type!r} are not supported by image models; "
                                 "send text and image_url parts.", param=f"{param}.type")
    return "\n".join(t for t in texts if t).strip(), urls


def earlier_image(messages: list[ChatMessage], state: AppState) -> list[ImageSource]:
    """The most recent image of the conversation before the prompt (the refine loop)."""
    for i in range(len(messages) - 1, -1, -1):
        found = _images_in(messages[i])
        if found:
            return [source_from_string(found[-1], param=f"messages[{i}].content", state=state)]
    return []


def _images_in(message: ChatMessage) -> list[str]:
    if message.content is None:
        return []
    if isinstance(message.content, str):
        return find_images(message.content)
    urls: list[str] = []
    for part in message.content:
        if part.type == "image_url" and part.url():
            urls.append(part.url() or "")
        elif part.text:
            urls += find_images(part.text)
    return urls


def _split_markdown(text: str, param: str) -> tuple[str, list[tuple[str, str]]]:
    urls = [(u, param) for u in MARKDOWN_IMAGE.findall(text)]
    return MARKDOWN_IMAGE.sub("", text).strip(), urls


def contents(state: AppState, outcome: Outcome | Result, n: int) -> list[str]:
    """Message contents: one with every image, or one per image when the caller asked for
    ``n`` > 1 (each choice then holds one image; model text goes with the first)."""
    links = [f"![image]({_url(state, d.blob, d.b64, d.mime)})" for d in outcome.delivered]
    groups = [links] if n == 1 else [[link] for link in links]
    if text := model_text(outcome.text):
        groups[0] = [text, *groups[0]]
    return ["\n\n".join(g) for g in groups]


def _url(state: AppState, blob: str | None, b64: str | None, mime: str) -> str:
    if blob is not None:
        return blob_url(state, blob)
    return f"data:{mime};base64,{b64 or ''}"


def chat_usage(usage: Usage | None) -> ChatUsage:
    if usage is None:
        return ChatUsage()
    total = usage.total_tokens or usage.input_tokens + usage.output_tokens
    return ChatUsage(prompt_tokens=usage.input_tokens, completion_tokens=usage.output_tokens, total_tokens=total)
