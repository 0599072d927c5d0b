"""The chat-completions wire format, as pydantic models, and the image-link scanner: the one
definition used by the chat surface (``api/chat.py``, which answers in these shapes and reads
images in a conversation) and the chat adapter (``providers/chat_image.py``, which reads an
upstream's answer in the same shapes and finds the picture inside its text).

Shapes follow OpenAI's ``CreateChatCompletionRequest`` / ``ChatCompletion`` /
``ChatCompletionChunk`` (github.com/openai/openai-openapi). Requests are tolerant: chat clients
send many settings an image model has no use for (``temperature``, ``tools`` …); those are
accepted and ignored, not reported. Answers keep what OpenAI requires with defaults for what an
OpenAI-compatible reseller may leave out (``id``, ``created``, ``usage``), so the gateway's own
answers and an upstream's are the same types.

Images inside text (``find_images``, ``model_text``): markdown images ``![..](url)`` first —
how this gateway and most resellers write them; failing those, bare ``data:image/..;base64,..``
URIs; failing those, bare http(s) URLs whose path ends in an image extension. A plain
``[download](url)`` beside a markdown image is the same picture, so the tiers are exclusive.
Every pattern is bounded or stops at a character that cannot continue it, so a hostile
conversation cannot make the scan quadratic.
"""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

# ---- requests -----------------------------------------------------------------------------------


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


# ---- answers ------------------------------------------------------------------------------------


class ChatUsage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    """The gateway always writes one; an upstream that refuses may send none."""
    refusal: str | None = None


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str | None = "stop"
    """``stop`` from the gateway; an upstream may say ``content_filter``, ``length`` …"""
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str = ""
    object: Literal["chat.completion"] = "chat.completion"
    created: int = 0
    model: str = ""
    choices: list[Choice]
    usage: ChatUsage | None = None


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    refusal: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: str | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str = ""
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int = 0
    model: str = ""
    choices: list[ChunkChoice] = Field(default_factory=list)
    usage: ChatUsage | None = None


# ---- images inside text -------------------------------------------------------------------------

# ``![alt](url)``; the URL may be a data URI or written ``<url>``; titles (``![a](url "t")``) are
# tolerated. Alt text ends at ``[``/``]``, a URL at ``(``/``)``: no backtracking across them.
MARKDOWN_IMAGE = re.compile(r'!\[[^\[\]\n]{0,1000}\]\(\s*<?([^()\s<>]+)>?(?:\s+"[^"\n]{0,1000}")?\s*\)')
_LINK = re.compile(r"\[[^\[\]\n]{0,1000}\]\(\s*<?([^()\s<>]+)>?\s*\)")
_DATA_URI = re.compile(r"data:image/[a-z0-9.+-]{1,32};base64,[A-Za-z0-9+/=_-]+", re.IGNORECASE)
_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".gif")
_IMAGE_TARGETS = ("http://", "https://", "data:image/")


def find_images(text: str) -> list[str]:
    """Image targets in a model's or a conversation's text, in order, each once (see the module
    docstring). A markdown image whose target is not an http(s) URL or an image data URI is no
    picture anyone can fetch, and is skipped."""
    tiers = ([t for t in MARKDOWN_IMAGE.findall(text) if t.lower().startswith(_IMAGE_TARGETS)],
             _DATA_URI.findall(text))
    for found in tiers:
        if found:
            return list(dict.fromkeys(found))
    return list(dict.fromkeys(_bare_image_urls(text)))


def _bare_image_urls(text: str) -> list[str]:
    """http(s) URLs standing alone in the text whose path ends in an image extension."""
    urls = []
    for word in text.split():
        word = word.strip("()<>[]\"'.,;:!?")
        if not word.lower().startswith(("http://", "https://")):
            continue
        try:
            path = urlsplit(word).path.lower()
        except ValueError:
            continue
        if path.endswith(_IMAGE_EXTENSIONS):
            urls.append(word)
    return urls


def model_text(text: str | None) -> str | None:
    """What the model wrote next to its images, without the images themselves: chat-served
    upstreams write their picture into the text as a link to *their* short-lived URL (often with a
    ``[download](same URL)`` beside it); the caller gets this gateway's copy instead."""
    if not text:
        return None
    targets = set(find_images(text)) | set(_DATA_URI.findall(text))
    out = _DATA_URI.sub("", MARKDOWN_IMAGE.sub("", text))
    out = _LINK.sub(lambda m: "" if m.group(1) in targets else m.group(0), out)
    for target in targets:
        out = out.replace(target, "")
    out = re.sub(r"\n{3,}", "\n\n", out).strip()
    return out or None
