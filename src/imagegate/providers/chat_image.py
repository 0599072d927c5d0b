"""Chat-served image models (``gpt-4o-image``, ``sora_image`` …) on an OpenAI-compatible
*chat completions* upstream.

Wire contract: ``POST {base}/chat/completions`` of the official OpenAPI spec
(``CreateChatCompletionRequest``), Bearer auth. These models are sold by resellers that draw the
picture behind a chat model: the prompt and the reference images go as one user message, and
the image comes back *inside the assistant's text* — a markdown image link
``![..](https://..)``, a ``data:image/..;base64,..`` URI, or (some resellers) a bare image URL.

What each model accepts is its catalog entry (``catalog.yaml``, section ``openai-chat``: the
resellers' usual names, and ``*`` for any other name a channel lists); answers are read with the
chat wire models of ``imagegate/wire/chat.py``. Choices written down (``docs/models.md``):

- ``stream: false`` by default; the channel option ``stream: true`` asks for SSE
  (``chat.completion.chunk`` deltas concatenated until ``[DONE]``, with
  ``stream_options.include_usage`` for the token counts) because some resellers only finish
  long image jobs on a streamed connection.
- Which text is an image: ``imagegate.wire.chat.find_images``, the scanner the chat surface
  uses too — markdown image targets first; failing those, bare ``data:image`` URIs; failing
  those, bare http(s) URLs whose path ends in an image extension. A plain ``[download](url)``
  link next to a markdown image is the same picture, so the tiers are exclusive. At most ``n``
  images are taken (the caller pays per image it asked for).
- An answer with no image fails. It is a ``ContentRefused`` when the answer says so in the
  spec's own terms (``message.refusal``, ``finish_reason: content_filter``) or contains one of
  the few phrases in ``_REFUSAL_MARKERS``; otherwise ``NoImageReturned`` carrying the text.
- Size and aspect ratio have no field in a chat request: they are dropped (reported).
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from imagegate.core import errors
from imagegate.core.job import Call, OutputImage, ProviderResult, Usage
from imagegate.providers.base import Adapter, Reply
from imagegate.wire.chat import ChatCompletion, ChatCompletionChunk, ChatUsage, find_images

# The only phrases read as a refusal when the spec's own signals are absent: what OpenAI's
# image safety system and the usual resellers write. Anything else is "no image".
_REFUSAL_MARKERS = ("content policy", "content_policy", "safety system", "policy violation")


class _Options(BaseModel):
    """``options:`` of an ``openai-chat`` channel."""

    model_config = ConfigDict(extra="forbid")

    stream: bool = False


class _Answer(BaseModel):
    """One assistant answer, however it travelled."""

    text: str
    refusal: str | None
    finish_reason: str | None
    usage: ChatUsage | None


class ChatImageAdapter(Adapter):
    """Image models behind an OpenAI-compatible chat completions upstream.

    When the job came through the chat surface (``job.native`` is a
    ``NativeRequest(protocol="chat")``), its ``messages`` are sent as they are — a multi-turn
    conversation keeps its history — except that the last user message carries the gateway's
    resolved reference images as data URIs: a reference may be an image of this gateway (the
    refine loop) or an address only the gateway may fetch, and the upstream must not need to
    reach either. Otherwise one user message is built from the prompt and the reference images.
    """

    provider = "openai-chat"
    key_env = None  # reseller channels: configured explicitly, never enabled from the environment

    Options = _Options
    options: _Options

    def build_request(self, call: Call) -> dict[str, Any]:
        """The ``CreateChatCompletionRequest`` body of one call (see the class docstring)."""
        body: dict[str, Any] = {"model": call.upstream_model, "messages": _messages(call),
                                "stream": self.options.stream}
        if self.options.stream:
            body["stream_options"] = {"include_usage": True}
        return body

    async def submit(self, call: Call) -> ProviderResult:
        reply = await self.send("POST", f"{self.base_url}/chat/completions", json=self.build_request(call),
                                headers={"Authorization": f"Bearer {self.channel.api_key or ''}"})
        answer = self._answer(reply)
        images = [_output(target) for target in find_images(answer.text)[: call.n]]
        usage = None
        if answer.usage is not None:
            usage = Usage(input_tokens=answer.usage.prompt_tokens, output_tokens=answer.usage.completion_tokens,
                          total_tokens=answer.usage.total_tokens)
        if not images:
            raise _no_image(answer)
        return ProviderResult(images=images, usage=usage, text=answer.text.strip() or None)

    def _answer(self, reply: Reply) -> _Answer:
        if reply.body.lstrip().startswith(b"{"):
            # Asked to stream or not, a reseller may answer with one JSON completion.
            completion = self.parse(ChatCompletion, reply)
            if not completion.choices:
                raise errors.UpstreamBadResponse("The upstream (openai-chat) answered without a choice.")
            choice = completion.choices[0]
            return _Answer(text=choice.message.content or "", refusal=choice.message.refusal,
                           finish_reason=choice.finish_reason, usage=completion.usage)
        return self._stream_answer(reply)

    def _stream_answer(self, reply: Reply) -> _Answer:
        text: list[str] = []
        refusal: list[str] = []
        finish: str | None = None
        usage: ChatUsage | None = None
        done = False
        for line in reply.body.decode("utf-8", "replace").splitlines():
            if not line.startswith("data:"):
                continue  # SSE comments, ``event:`` and blank separator lines
            data = line[5:].strip()
            if data == "[DONE]":
                done = True
                break
            try:
                chunk = ChatCompletionChunk.model_validate(orjson.loads(data))
            except (orjson.JSONDecodeError, ValidationError) as exc:
                raise errors.UpstreamBadResponse(
                    "The upstream (openai-chat) streamed a chunk imagegate cannot read.") from exc
            usage = chunk.usage or usage
            for choice in chunk.choices[:1]:
                text.append(choice.delta.content or "")
                refusal.append(choice.delta.refusal or "")
                finish = choice.finish_reason or finish
        if not done and finish is None:
            raise errors.UpstreamBadResponse("The upstream (openai-chat) stream ended before it finished.")
        return _Answer(text="".join(text), refusal="".join(refusal) or None, finish_reason=finish, usage=usage)


def _messages(call: Call) -> list[Any]:
    prompt: dict[str, Any] = {"role": "user", "content": call.job.prompt}
    if call.images:
        parts: list[dict[str, Any]] = [{"type": "text", "text": call.job.prompt}]
        for img in call.images:
            uri = f"data:{img.mime};base64,{base64.b64encode(img.data).decode()}"
            parts.append({"type": "image_url", "image_url": {"url": uri}})
        prompt["content"] = parts
    native = call.job.native
    if native is None or native.protocol != "chat" or not isinstance(native.body.get("messages"), list):
        return [prompt]
    messages = list(native.body["messages"])
    last = next((i for i in range(len(messages) - 1, -1, -1)
                 if isinstance(messages[i], dict) and messages[i].get("role") == "user"), None)
    if last is not None and call.images:
        messages[last] = {**messages[last], "content": prompt["content"]}
    return messages


def _output(target: str) -> OutputImage:
    if target[:5].lower() == "data:":
        head, _, b64 = target.partition(",")
        return OutputImage(b64=b64, mime=head[5:].split(";")[0])
    return OutputImage(url=target)


def _no_image(answer: _Answer) -> errors.UpstreamError:
    said = (answer.refusal or answer.text).strip()
    shown = said[:500] or "(empty answer)"
    refused = (bool(answer.refusal) or answer.finish_reason == "content_filter"
               or any(marker in said.lower() for marker in _REFUSAL_MARKERS))
    if refused:
        return errors.ContentRefused(f"The model refused to draw this: {shown}", reason="SAFETY")
    return errors.NoImageReturned(f"The model answered without an image: {shown}", reason="NO_IMAGE")
