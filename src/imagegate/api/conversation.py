"""What the conversational surfaces (chat completions, Gemini ``generateContent``) share: model
names, the reference image a conversation implies, and image links inside model text."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from imagegate.core.errors import InvalidRequest, ModelNotFound
from imagegate.core.job import ImageJob
from imagegate.routing import Router

# Google's names for its image models → the platform's names for them (docs/models.md).
ALIASES = {
    "gemini-2.5-flash-image": "nano-banana",
    "gemini-2.5-flash-image-preview": "nano-banana",
    "gemini-3-pro-image-preview": "nano-banana-2",
    "gemini-3-pro-image": "nano-banana-2",
}

# ``![alt](url)``; the URL may be a data URI. Titles (``![a](url "t")``) are tolerated. Every
# repetition is bounded or stops at a character that cannot continue it (alt text ends at ``[``, a
# URL at ``(``), so a hostile history cannot make the scan quadratic.
MARKDOWN_IMAGE = re.compile(r'!\[[^\[\]\n]{0,1000}\]\(\s*<?([^()\s<>]+)>?(?:\s+"[^"\n]{0,1000}")?\s*\)')
_LINK = re.compile(r"\[[^\[\]\n]{0,1000}\]\(\s*<?([^()\s<>]+)>?\s*\)")
_DATA_URI = re.compile(r"data:image/[a-z0-9.+-]{1,32};base64,[A-Za-z0-9+/=_-]+", re.IGNORECASE)
_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".gif")


def public_model(name: str, router: Router) -> str:
    """The public model a caller means: a served name as is, else a Google name by ``ALIASES``."""
    served = router.models()
    if name in served:
        return name
    alias = ALIASES.get(name)
    if alias is not None and alias in served:
        return alias
    raise ModelNotFound(f"models/{name} is not found: this gateway serves {', '.join(sorted(served))}.",
                        param="model")


def fit_references(router: Router, job: ImageJob, implicit: bool) -> ImageJob:
    """A prompt with reference images is an edit where the model can edit (OpenAI sends those to
    ``/images/edits``); models that take references only on generation keep ``generate``. An image
    taken from the history is left out for a model that takes none (dall-e-3): every later turn
    of a chat carries the history, and refusing them all would make the model unusable in chat."""
    if not job.images:
        return job
    for candidate in (job.model_copy(update={"action": "edit"}), job):
        try:
            router.plan(candidate)
        except InvalidRequest:
            continue
        return candidate
    return job.model_copy(update={"images": []}) if implicit else job


def find_images(text: str) -> list[str]:
    """Markdown images first (how this gateway answers), else bare data URIs or image URLs."""
    return MARKDOWN_IMAGE.findall(text) or _DATA_URI.findall(text) or _bare_image_urls(text)


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
