"""JSON Schemas of the OpenAI bodies the emulators check, written by this project.

They are written from the facts of OpenAI's official OpenAPI spec (github.com/openai/openai-openapi,
version 2.3.0): field names, types, enums, limits, `required` and which fields accept null. They
are not a copy of the spec: descriptions and examples are left out, and only the schemas the
emulators use are here, with what they reference.

`CreateChatCompletionRequest` is huge in the spec; here it types what the chat emulator and
imagegate's chat adapter use (model, messages with text and image parts, stream, stream_options,
and the plain scalar options) and accepts any value for the rest. It still names every top-level
property the spec names (`CHAT_COMPLETION_PARAMETERS`), so an unknown parameter is refused as the
real API refuses it. The spec's `allOf` of shared response properties is flattened into one object.

The schemas are OpenAPI 3.1 (JSON Schema 2020-12): where the spec says `nullable: true`, a schema
here reads `anyOf: [<schema>, {"type": "null"}]` (the spec's meaning, which 3.1 validators would
otherwise ignore). A `$ref` points at `#/components/schemas/<name>` of `SCHEMAS`.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

_NULL: Schema = {"type": "null"}


def _nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, _NULL]}


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _string_enum(*values: str, default: str | None = None) -> Schema:
    schema: Schema = {"type": "string", "enum": list(values)}
    if default is not None:
        schema["default"] = default
    return schema


def _model(default: str, *known: str) -> Schema:
    # Any model id is a string; the spec lists the known ones as a second branch.
    return {"anyOf": [{"type": "string"}, _string_enum(*known)], "default": default}


# -- images --------------------------------------------------------------------------------------

_N: Schema = _nullable({"type": "integer", "minimum": 1, "maximum": 10, "default": 1})
_OUTPUT_FORMAT: Schema = _nullable(_string_enum("png", "jpeg", "webp", default="png"))
_BACKGROUND: Schema = _nullable(_string_enum("transparent", "opaque", "auto", default="auto"))
_STREAM: Schema = _nullable({"type": "boolean", "default": False})
_BINARY: Schema = {"type": "string", "format": "binary"}

_IMAGES: dict[str, Schema] = {
    "CreateImageRequest": {
        "type": "object",
        "properties": {
            "prompt": {"type": "string"},
            "model": _nullable(
                _model(
                    "dall-e-2",
                    "gpt-image-1.5",
                    "gpt-image-2",
                    "gpt-image-2-2026-04-21",
                    "dall-e-2",
                    "dall-e-3",
                    "gpt-image-1",
                    "gpt-image-1-mini",
                )
            ),
            "n": _N,
            "quality": _nullable(_string_enum("standard", "hd", "low", "medium", "high", "auto", default="auto")),
            "response_format": _nullable(_string_enum("url", "b64_json", default="url")),
            "output_format": _OUTPUT_FORMAT,
            "output_compression": _nullable({"type": "integer", "default": 100}),
            "stream": _STREAM,
            "partial_images": _ref("PartialImages"),
            "size": _nullable(
                {
                    "anyOf": [
                        {"type": "string"},
                        _string_enum(
                            "auto", "1024x1024", "1536x1024", "1024x1536",
                            "256x256", "512x512", "1792x1024", "1024x1792",
                        ),
                    ],
                    "default": "auto",
                }
            ),
            "moderation": _nullable(_string_enum("low", "auto", default="auto")),
            "background": _BACKGROUND,
            "style": _nullable(_string_enum("vivid", "natural", default="vivid")),
            "user": {"type": "string"},
        },
        "required": ["prompt"],
    },
    # The multipart edit: files are `format: binary` strings (the emulator passes markers).
    "CreateImageEditRequest": {
        "type": "object",
        "properties": {
            "image": {"anyOf": [_BINARY, {"type": "array", "maxItems": 16, "items": _BINARY}]},
            "prompt": {"type": "string"},
            "mask": _BINARY,
            "background": _BACKGROUND,
            "model": _nullable(
                _model(
                    "gpt-image-1.5",
                    "gpt-image-1.5",
                    "gpt-image-2",
                    "gpt-image-2-2026-04-21",
                    "dall-e-2",
                    "gpt-image-1",
                    "gpt-image-1-mini",
                    "chatgpt-image-latest",
                )
            ),
            "n": _N,
            "size": _nullable(
                {
                    "anyOf": [
                        {"type": "string"},
                        _string_enum("256x256", "512x512", "1024x1024", "1536x1024", "1024x1536", "auto"),
                    ],
                    "default": "1024x1024",
                }
            ),
            "response_format": _nullable(_string_enum("url", "b64_json")),
            "output_format": _OUTPUT_FORMAT,
            "output_compression": _nullable({"type": "integer", "default": 100}),
            "user": {"type": "string"},
            "input_fidelity": {"anyOf": [_ref("InputFidelity"), _NULL]},
            "stream": _STREAM,
            "partial_images": _ref("PartialImages"),
            "quality": _nullable(_string_enum("standard", "low", "medium", "high", "auto", default="auto")),
        },
        "required": ["prompt", "image"],
    },
    # The JSON edit: images by reference (URL or file id), GPT image models only.
    "EditImageBodyJsonParam": {
        "type": "object",
        "properties": {
            "model": {
                "anyOf": [
                    {"type": "string"},
                    _string_enum(
                        "gpt-image-1.5",
                        "gpt-image-2",
                        "gpt-image-2-2026-04-21",
                        "gpt-image-1",
                        "gpt-image-1-mini",
                        "chatgpt-image-latest",
                    ),
                    _NULL,
                ],
                "default": "gpt-image-1.5",
            },
            "images": {"type": "array", "minItems": 1, "maxItems": 16, "items": _ref("ImageRefParam")},
            "mask": _ref("ImageRefParam"),
            "prompt": {"type": "string", "minLength": 1, "maxLength": 32000},
            "n": {"anyOf": [{"type": "integer", "minimum": 1, "maximum": 10}, _NULL], "default": 1},
            "quality": {"anyOf": [_string_enum("low", "medium", "high", "auto"), _NULL], "default": "auto"},
            "input_fidelity": {"anyOf": [_string_enum("high", "low"), _NULL]},
            "size": {"anyOf": [_string_enum("auto", "1024x1024", "1536x1024", "1024x1536"), _NULL], "default": "auto"},
            "user": {"type": "string"},
            "output_format": {"anyOf": [_string_enum("png", "jpeg", "webp"), _NULL], "default": "png"},
            "output_compression": {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 100}, _NULL]},
            "moderation": {"anyOf": [_string_enum("low", "auto"), _NULL], "default": "auto"},
            "background": {"anyOf": [_string_enum("transparent", "opaque", "auto"), _NULL], "default": "auto"},
            "stream": {"anyOf": [{"type": "boolean"}, _NULL], "default": False},
            "partial_images": _ref("PartialImages"),
        },
        "required": ["images", "prompt"],
    },
    # Exactly one of `image_url` (a URL or a base64 data URL, at most 20 MB) and `file_id`.
    "ImageRefParam": {
        "type": "object",
        "properties": {
            "image_url": {"type": "string", "format": "uri", "maxLength": 20971520},
            "file_id": {"type": "string"},
        },
        "anyOf": [{"required": ["image_url"]}, {"required": ["file_id"]}],
        "not": {"required": ["image_url", "file_id"]},
        "additionalProperties": False,
    },
    "PartialImages": {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 3, "default": 0}, _NULL]},
    "InputFidelity": _string_enum("high", "low"),
    "ImagesResponse": {
        "type": "object",
        "properties": {
            "created": {"type": "integer", "format": "unixtime"},
            "data": {"type": "array", "items": _ref("Image")},
            "background": _string_enum("transparent", "opaque"),
            "output_format": _string_enum("png", "webp", "jpeg"),
            "size": _string_enum("1024x1024", "1024x1536", "1536x1024"),
            "quality": _string_enum("low", "medium", "high"),
            "usage": _ref("ImageGenUsage"),
        },
        "required": ["created"],
    },
    "Image": {
        "type": "object",
        "properties": {
            "b64_json": {"type": "string"},
            "url": {"type": "string", "format": "uri"},
            "revised_prompt": {"type": "string"},
        },
    },
    "ImageGenUsage": {
        "type": "object",
        "properties": {
            "input_tokens": {"type": "integer"},
            "total_tokens": {"type": "integer"},
            "output_tokens": {"type": "integer"},
            "output_tokens_details": _ref("ImageGenOutputTokensDetails"),
            "input_tokens_details": _ref("ImageGenInputUsageDetails"),
        },
        "required": ["input_tokens", "total_tokens", "output_tokens", "input_tokens_details"],
    },
    "ImageGenOutputTokensDetails": {
        "type": "object",
        "properties": {"image_tokens": {"type": "integer"}, "text_tokens": {"type": "integer"}},
        "required": ["image_tokens", "text_tokens"],
    },
    "ImageGenInputUsageDetails": {
        "type": "object",
        "properties": {"text_tokens": {"type": "integer"}, "image_tokens": {"type": "integer"}},
        "required": ["text_tokens", "image_tokens"],
    },
}

# -- errors --------------------------------------------------------------------------------------

_ERRORS: dict[str, Schema] = {
    "ErrorResponse": {"type": "object", "properties": {"error": _ref("Error")}, "required": ["error"]},
    "Error": {
        "type": "object",
        "properties": {
            "code": {"anyOf": [{"type": "string"}, _NULL]},
            "message": {"type": "string"},
            "param": {"anyOf": [{"type": "string"}, _NULL]},
            "type": {"type": "string"},
        },
        "required": ["type", "message", "param", "code"],
    },
}

# -- chat completions ----------------------------------------------------------------------------

# Every top-level property of the spec's `CreateChatCompletionRequest` (its own and those of the
# shared `ModelResponseProperties` / `CreateModelResponseProperties` it extends), in spec order.
CHAT_COMPLETION_PARAMETERS = (
    "metadata",
    "top_logprobs",
    "temperature",
    "top_p",
    "user",
    "safety_identifier",
    "prompt_cache_key",
    "prompt_cache_retention",
    "prompt_cache_options",
    "messages",
    "model",
    "service_tier",
    "modalities",
    "verbosity",
    "reasoning_effort",
    "max_completion_tokens",
    "frequency_penalty",
    "presence_penalty",
    "web_search_options",
    "response_format",
    "audio",
    "store",
    "moderation",
    "stream",
    "stop",
    "logit_bias",
    "logprobs",
    "max_tokens",
    "n",
    "prediction",
    "seed",
    "stream_options",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "function_call",
    "functions",
)

_CHAT_TYPED: dict[str, Schema] = {
    "messages": {"type": "array", "minItems": 1, "items": _ref("ChatCompletionRequestMessage")},
    # Any model id; the spec's list of known ids is left out (the emulators decide which they serve).
    "model": {"type": "string"},
    "stream": _nullable({"type": "boolean", "default": False}),
    "stream_options": _ref("ChatCompletionStreamOptions"),
    "n": _nullable({"type": "integer", "minimum": 1, "maximum": 128, "default": 1}),
    "user": {"type": "string"},
    "safety_identifier": {"anyOf": [{"type": "string", "maxLength": 64}, _NULL]},
    "metadata": {"anyOf": [{"type": "object", "additionalProperties": {"type": "string"}}, _NULL]},
    "temperature": {"anyOf": [{"type": "number", "minimum": 0, "maximum": 2, "default": 1}, _NULL]},
    "top_p": {"anyOf": [{"type": "number", "minimum": 0, "maximum": 1, "default": 1}, _NULL]},
    # Declared twice in the spec (nullable, and not): both hold, so null is refused.
    "top_logprobs": {"type": "integer", "minimum": 0, "maximum": 20},
    "seed": _nullable({"type": "integer"}),
    "max_tokens": _nullable({"type": "integer"}),
    "max_completion_tokens": _nullable({"type": "integer"}),
    "frequency_penalty": _nullable({"type": "number", "default": 0, "minimum": -2, "maximum": 2}),
    "presence_penalty": _nullable({"type": "number", "default": 0, "minimum": -2, "maximum": 2}),
    "store": _nullable({"type": "boolean", "default": False}),
    "logprobs": _nullable({"type": "boolean", "default": False}),
    "modalities": {"anyOf": [{"type": "array", "items": _string_enum("text", "audio")}, _NULL]},
    "service_tier": {
        "anyOf": [_string_enum("auto", "default", "flex", "scale", "priority", "fast", default="auto"), _NULL]
    },
    "verbosity": {"anyOf": [_string_enum("low", "medium", "high", default="medium"), _NULL]},
    "reasoning_effort": {
        "anyOf": [_string_enum("none", "minimal", "low", "medium", "high", "xhigh", "max", default="medium"), _NULL]
    },
    "parallel_tool_calls": {"type": "boolean", "default": True},
}


def _text_or_parts(part: Schema) -> Schema:
    return {"oneOf": [{"type": "string"}, {"type": "array", "items": part, "minItems": 1}]}


def _message(role: str, content: Schema, required: tuple[str, ...], **properties: Schema) -> Schema:
    return {
        "type": "object",
        "properties": {"content": content, "role": _string_enum(role), **properties},
        "required": list(required),
    }


def _part(kind: str, **properties: Schema) -> Schema:
    return {
        "type": "object",
        "properties": {"type": _string_enum(kind), **properties, "prompt_cache_breakpoint": _CACHE_BREAKPOINT},
        "required": ["type", kind],
    }


_CACHE_BREAKPOINT: Schema = {
    "type": "object",
    "properties": {"mode": _string_enum("explicit", default="explicit")},
    "required": ["mode"],
}
_TEXT_PART = _ref("ChatCompletionRequestMessageContentPartText")
_NAME: Schema = {"type": "string"}

_CHAT: dict[str, Schema] = {
    "CreateChatCompletionRequest": {
        "type": "object",
        "properties": {name: _CHAT_TYPED.get(name, {}) for name in CHAT_COMPLETION_PARAMETERS},
        "required": ["model", "messages"],
    },
    "ChatCompletionStreamOptions": {
        "anyOf": [
            {
                "type": "object",
                "default": None,
                "properties": {"include_usage": {"type": "boolean"}, "include_obfuscation": {"type": "boolean"}},
            },
            _NULL,
        ]
    },
    # One of the six roles (the spec discriminates on `role`).
    "ChatCompletionRequestMessage": {
        "oneOf": [
            _ref("ChatCompletionRequestDeveloperMessage"),
            _ref("ChatCompletionRequestSystemMessage"),
            _ref("ChatCompletionRequestUserMessage"),
            _ref("ChatCompletionRequestAssistantMessage"),
            _ref("ChatCompletionRequestToolMessage"),
            _ref("ChatCompletionRequestFunctionMessage"),
        ]
    },
    "ChatCompletionRequestDeveloperMessage": _message(
        "developer", _text_or_parts(_TEXT_PART), ("content", "role"), name=_NAME
    ),
    "ChatCompletionRequestSystemMessage": _message(
        "system", _text_or_parts(_TEXT_PART), ("content", "role"), name=_NAME
    ),
    "ChatCompletionRequestUserMessage": _message(
        "user", _text_or_parts(_ref("ChatCompletionRequestUserMessageContentPart")), ("content", "role"), name=_NAME
    ),
    # Earlier answers of a conversation; tool calls and audio are accepted, not typed.
    "ChatCompletionRequestAssistantMessage": _message(
        "assistant",
        {
            "anyOf": [
                _text_or_parts({"oneOf": [_TEXT_PART, _ref("ChatCompletionRequestMessageContentPartRefusal")]}),
                _NULL,
            ]
        },
        ("role",),
        refusal={"anyOf": [{"type": "string"}, _NULL]},
        name=_NAME,
        audio={"anyOf": [{"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}}, _NULL]},
        tool_calls={"type": "array"},
        function_call={"anyOf": [{"type": "object"}, _NULL]},
    ),
    "ChatCompletionRequestToolMessage": _message(
        "tool", _text_or_parts(_TEXT_PART), ("role", "content", "tool_call_id"), tool_call_id={"type": "string"}
    ),
    "ChatCompletionRequestFunctionMessage": _message(
        "function", {"anyOf": [{"type": "string"}, _NULL]}, ("role", "content", "name"), name=_NAME
    ),
    "ChatCompletionRequestUserMessageContentPart": {
        "oneOf": [
            _TEXT_PART,
            _ref("ChatCompletionRequestMessageContentPartImage"),
            _ref("ChatCompletionRequestMessageContentPartAudio"),
            _ref("ChatCompletionRequestMessageContentPartFile"),
        ]
    },
    "ChatCompletionRequestMessageContentPartText": _part("text", text={"type": "string"}),
    "ChatCompletionRequestMessageContentPartImage": _part(
        "image_url",
        image_url={
            "type": "object",
            "properties": {
                "url": {"type": "string", "format": "uri"},
                "detail": _string_enum("auto", "low", "high", default="auto"),
            },
            "required": ["url"],
        },
    ),
    "ChatCompletionRequestMessageContentPartAudio": _part(
        "input_audio",
        input_audio={
            "type": "object",
            "properties": {"data": {"type": "string"}, "format": _string_enum("wav", "mp3")},
            "required": ["data", "format"],
        },
    ),
    "ChatCompletionRequestMessageContentPartFile": _part(
        "file",
        file={
            "type": "object",
            "properties": {name: {"type": "string"} for name in ("filename", "file_data", "file_id")},
        },
    ),
    "ChatCompletionRequestMessageContentPartRefusal": {
        "type": "object",
        "properties": {"type": _string_enum("refusal"), "refusal": {"type": "string"}},
        "required": ["type", "refusal"],
    },
}

SCHEMAS: dict[str, Schema] = {**_IMAGES, **_ERRORS, **_CHAT}
