"""Public request and response schemas of the chat-completions surface (image models only).

Shapes follow OpenAI's ``CreateChatCompletionRequest`` / ``ChatCompletion`` /
``ChatCompletionChunk``. Requests are tolerant: chat clients send many settings an image model
has no use for (``temperature``, ``tools`` …); those are accepted and ignored, not reported.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ImageURL(_Open):
    url: str = Field(min_length=1)
    detail: str | None = None


class ContentPart(_Open):
    """One part of a message's content. Only ``text`` and ``image_url`` mean something to an
    image model; other types are refused in the message that is the prompt."""

    type: str
    text: str | None = None
    image_url: ImageURL | str | None = None

    def url(self) -> str | None:
        if isinstance(self.image_url, ImageURL):
            return self.image_url.url
        return self.image_url


class ChatMessage(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None


class StreamOptions(_Open):
    include_usage: bool = False


class ChatCompletionRequest(_Open):
    """A chat completion addressed to an image model. The last user message is the prompt; image
    parameters may be given as extra body fields (``extra_body`` in the OpenAI SDK)."""

    model: str = Field(min_length=1, description="A public image model name (see GET /v1/models).")
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(default=1, ge=1, le=10, description="Number of images (one choice each when > 1).")
    user: str | None = None
    size: str | None = Field(default=None, description="WxH, as on /v1/images/generations.")
    aspect_ratio: str | None = Field(default=None, description="W:H, e.g. 16:9.")
    image_size: Literal["1K", "2K", "4K"] | None = None
    quality: str | None = None
    style: str | None = None
    background: Literal["transparent", "opaque", "auto"] | None = None
    output_format: Literal["png", "jpeg", "webp"] | None = None
    seed: int | None = None
    negative_prompt: str | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: None = None


class Choice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: Literal["stop"] = "stop"
    logprobs: None = None


class ChatUsage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: ChatUsage


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: Delta
    finish_reason: Literal["stop"] | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: ChatUsage | None = None
