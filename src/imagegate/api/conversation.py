"""What the conversational surfaces (chat completions, Gemini ``generateContent``) share: model
names and the reference image a conversation implies. (Images inside text are read by the chat
wire layer's scanner, ``imagegate.wire.chat``.)"""

from __future__ import annotations

from imagegate.core.errors import InvalidRequest, ModelNotFound
from imagegate.core.job import ImageJob
from imagegate.routing import Router


def public_model(name: str, router: Router) -> str:
    """The public model a caller means: a served name as is, else a Gemini model's own name
    (``gemini-2.5-flash-image``) for the public model that serves it (``nano-banana``)."""
    served = router.models()
    if name in served:
        return name
    alias = _gemini_name(name, router, served)
    if alias is not None:
        return alias
    raise ModelNotFound(f"models/{name} is not found: this gateway serves {', '.join(sorted(served))}.",
                        param="model")


def _gemini_name(name: str, router: Router, served: dict[str, str]) -> str | None:
    """The public model whose first channel speaks Gemini natively (``native_protocol: gemini`` in
    the catalog) and sends ``name`` upstream. Google's ``-preview`` and stable spellings of a
    model are one model (``gemini-2.5-flash-image-preview`` → the ``gemini-2.5-flash-image`` one).
    A catalog entry of that name wins over one that only sends it (``nano-banana-pro`` over
    ``nano-banana-hd``, its 4K pin), the exact spelling over the other, then the shortest name."""
    spellings = {name, name.removesuffix("-preview"), f"{name.removesuffix('-preview')}-preview"}
    found: list[tuple[bool, bool, int, str]] = []
    for public in served:
        route = router.first_route(public)
        if route is None or route.spec.native_protocol != "gemini" or route.upstream_model not in spellings:
            continue
        found.append((route.model not in spellings, route.upstream_model != name, len(public), public))
    return min(found)[3] if found else None


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
