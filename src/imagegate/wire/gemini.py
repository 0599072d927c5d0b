"""The Gemini ``generateContent`` wire format (Gemini API ``v1beta``), as pydantic models: the one
definition used by the Gemini surface (``api/gemini.py``) and the Gemini adapter
(``providers/gemini.py``).

Field names are snake_case in Python and camelCase on the wire
(``model_dump(by_alias=True, exclude_none=True)``); both spellings are accepted on input, as
Google's proto3 JSON parser does. Every model keeps unknown fields (``extra="allow"``), so a
request passed through from a Google client (``safetySettings``, ``tools``, ``thoughtSignature``
…) reaches the upstream unchanged and a newer answer still parses. What each model accepts
(aspect ratios, ``imageSize`` tiers, reference images) is the catalog's business
(``catalog.yaml``, section ``gemini``), not the wire's.

Source: ``googleapis/python-genai`` ``google/genai/types.py`` (Part, Blob, Content,
GenerationConfig, ImageConfig, Candidate, GenerateContentResponse, UsageMetadata).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

# finishReason / blockReason values that mean "refused for safety or policy", as opposed to
# "the model just did not draw" (NO_IMAGE, STOP with text only, MAX_TOKENS, OTHER …).
REFUSAL_REASONS = frozenset({
    "SAFETY", "IMAGE_SAFETY", "PROHIBITED_CONTENT", "IMAGE_PROHIBITED_CONTENT", "BLOCKLIST", "SPII",
    "RECITATION", "IMAGE_RECITATION",
})


class GeminiModel(BaseModel):
    """Base: camelCase on the wire, snake_case accepted, unknown fields kept."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    def wire(self) -> dict[str, Any]:
        """The JSON object as Google expects it."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class Blob(GeminiModel):
    """``inlineData``: base64 bytes with their MIME type."""

    mime_type: str
    data: str


class FileData(GeminiModel):
    mime_type: str | None = None
    file_uri: str


class Part(GeminiModel):
    """One part of a turn: text, inline bytes or a file reference (plus thought markers)."""

    text: str | None = None
    inline_data: Blob | None = None
    file_data: FileData | None = None
    thought: bool | None = None
    thought_signature: str | None = None


class Content(GeminiModel):
    role: str | None = None
    parts: list[Part] = Field(default_factory=list)


class ImageConfig(GeminiModel):
    aspect_ratio: str | None = None
    image_size: str | None = None


class GenerationConfig(GeminiModel):
    response_modalities: list[str] | None = None
    candidate_count: int | None = None
    seed: int | None = None
    image_config: ImageConfig | None = None


class GenerateContentRequest(GeminiModel):
    """Body of ``POST /v1beta/models/{model}:generateContent``. ``safetySettings``,
    ``systemInstruction``, ``tools``, ``toolConfig`` … travel as extra fields."""

    contents: list[Content]
    generation_config: GenerationConfig | None = None


class Candidate(GeminiModel):
    content: Content | None = None
    finish_reason: str | None = None
    finish_message: str | None = None
    index: int | None = None


class PromptFeedback(GeminiModel):
    block_reason: str | None = None
    block_reason_message: str | None = None


class ModalityTokenCount(GeminiModel):
    modality: str | None = None
    token_count: int = 0


class UsageMetadata(GeminiModel):
    prompt_token_count: int = 0
    candidates_token_count: int = 0
    thoughts_token_count: int = 0
    total_token_count: int = 0
    prompt_tokens_details: list[ModalityTokenCount] = Field(default_factory=list)
    candidates_tokens_details: list[ModalityTokenCount] = Field(default_factory=list)


class GenerateContentResponse(GeminiModel):
    candidates: list[Candidate] = Field(default_factory=list)
    prompt_feedback: PromptFeedback | None = None
    usage_metadata: UsageMetadata | None = None
    model_version: str | None = None
    response_id: str | None = None


class GoogleErrorDetail(GeminiModel):
    type: str | None = Field(default=None, alias="@type")
    reason: str | None = None


class GoogleError(GeminiModel):
    code: int | None = None
    message: str = ""
    status: str | None = None
    details: list[GoogleErrorDetail] = Field(default_factory=list)


class GoogleErrorBody(GeminiModel):
    """``{"error": {"code", "message", "status", "details"}}`` (google.rpc.Status)."""

    error: GoogleError
