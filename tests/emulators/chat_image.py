"""Emulator of a chat-completions upstream that draws (``gpt-4o-image``, ``sora_image`` resellers).

Strict about the official spec: Bearer auth, no parameter outside ``CreateChatCompletionRequest``,
its schema (messages, content parts, ``stream_options``; written down in ``openai_schemas.py``),
a known model, and image parts that are real images (``data:`` URIs are decoded and opened; http
URLs must look like URLs).
The answer carries one picture drawn for the prompt, written the way ``mode`` says:

- ``"markdown"``: ``![image](<emulator URL>)`` followed by a ``[download](<same URL>)`` link,
  as the usual resellers write it;
- ``"data_uri"``: ``![image](data:image/png;base64,...)``;
- ``"bare_url"``: the URL alone in the text.

``stream: true`` answers with ``chat.completion.chunk`` events (the link split across chunks),
a usage chunk when ``stream_options.include_usage`` is set, then ``data: [DONE]``.
``say(text)`` makes the next answers that text instead (a refusal, a chatty non-answer).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import time
import uuid
import zlib
from collections import deque
from typing import Any, Literal

from aiohttp import web
from PIL import Image, UnidentifiedImageError

from tests.emulators.base import Emulator, make_image
from tests.emulators.openai import ApiError, OpenAIEmulator, validate

MODELS = ("gpt-4o-image", "gpt-4o-image-vip", "sora_image", "sora_image-vip")
Mode = Literal["markdown", "data_uri", "bare_url"]
REFUSAL = ("I'm sorry, but I can't create that image. This request may violate our content policy. "
           "Please try a different prompt.")


class ChatImageEmulator(Emulator):
    """An OpenAI-compatible chat completions upstream whose answers carry images."""

    def __init__(self, api_key: str = "test-upstream-key", models: tuple[str, ...] = ()) -> None:
        super().__init__(api_key)
        self.models = frozenset((*MODELS, *models))
        """Model names this reseller sells (a test may add one)."""
        self.mode: Mode = "markdown"
        self._said: deque[str] = deque()

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/chat/completions", self._completions)]

    def error_body(self, status: int, message: str, code: str | None) -> dict[str, Any]:
        return OpenAIEmulator.api_error_body(ApiError(message, None, code, status))

    def reset(self) -> None:
        super().reset()
        self.mode = "markdown"
        self._said.clear()

    def say(self, text: str, times: int = 1) -> None:
        """Answer the next ``times`` requests with ``text`` and no image."""
        self._said.extend([text] * times)

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        try:
            body = self._validated(request)
            prompt, pictures = self._last_user_message(body["messages"])
        except ApiError as exc:
            return web.json_response(OpenAIEmulator.api_error_body(exc), status=exc.status)
        content = self._said.popleft() if self._said else self._draw(prompt, pictures)
        usage = {"prompt_tokens": max(1, len(prompt) // 4) + 85 * len(pictures),
                 "completion_tokens": max(1, len(content) // 4)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return await self._stream(request, body["model"], content, usage if include_usage else None)
        return web.json_response({
            "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": None},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": usage,
        })

    def _validated(self, request: web.Request) -> dict[str, Any]:
        if not self.auth_bearer(request):
            raise ApiError("Incorrect API key provided.", code="invalid_api_key", status=401)
        body = self.recorded(request).json
        if not isinstance(body, dict):
            raise ApiError("We could not parse the JSON body of your request.")
        validate(body, "CreateChatCompletionRequest")
        if body["model"] not in self.models:
            raise ApiError(f"The model `{body['model']}` does not exist.", "model", "model_not_found", 404)
        if body.get("stream_options") is not None and not body.get("stream"):
            raise ApiError("The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                           "stream_options")
        return body

    @staticmethod
    def _last_user_message(messages: list[dict[str, Any]]) -> tuple[str, list[tuple[int, int]]]:
        users = [m for m in messages if m["role"] == "user"]
        if not users:
            raise ApiError("The conversation needs a user message.", "messages")
        content = users[-1]["content"]
        if isinstance(content, str):
            return content, []
        texts: list[str] = []
        pictures: list[tuple[int, int]] = []
        for i, part in enumerate(content):
            if part["type"] == "text":
                texts.append(part["text"])
            elif part["type"] == "image_url":
                pictures.append(_picture(part["image_url"]["url"], f"messages[{len(messages) - 1}].content[{i}]"))
            else:
                raise ApiError(f"This model does not take '{part['type']}' parts.", "messages")
        return " ".join(texts), pictures

    def _draw(self, prompt: str, pictures: list[tuple[int, int]]) -> str:
        width, height = pictures[0] if pictures else (1024, 1024)
        image = make_image(width, height, "png", seed=zlib.crc32(prompt.encode()))
        if self.mode == "data_uri":
            return f"Here is your image:\n\n![image](data:image/png;base64,{base64.b64encode(image).decode()})"
        url = self.host_bytes(image, "image/png")
        if self.mode == "bare_url":
            return f"Done! {url}"
        return f"> Generating... 100%\n\n![image]({url})\n\n[download]({url})"

    async def _stream(self, request: web.Request, model: str, content: str,
                      usage: dict[str, int] | None) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": model}

        async def send(choices: list[dict[str, Any]], **extra: Any) -> None:
            await response.write(f"data: {json.dumps({**base, 'choices': choices, **extra})}\n\n".encode())

        await send([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        for start in range(0, len(content), 37):  # odd-sized pieces: links are split across chunks
            await send([{"index": 0, "delta": {"content": content[start:start + 37]}, "finish_reason": None}])
        await send([{"index": 0, "delta": {}, "finish_reason": "stop"}])
        if usage is not None:
            await send([], usage=usage)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


def _picture(url: str, param: str) -> tuple[int, int]:
    if url.startswith(("http://", "https://")):
        return 1024, 1024
    head, _, data = url.partition(",")
    if not (head.startswith("data:image/") and head.endswith(";base64")):
        raise ApiError(f"Invalid '{param}': expected an image URL or a base64 data URL.", param, "invalid_value")
    try:
        raw = base64.b64decode(data, validate=True)
        with Image.open(io.BytesIO(raw)) as image:
            return image.width, image.height
    except (binascii.Error, UnidentifiedImageError, OSError) as exc:
        raise ApiError(f"Invalid '{param}': not a valid image.", param, "invalid_image_format") from exc
