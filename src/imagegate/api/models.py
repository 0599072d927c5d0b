"""GET /v1/models and GET /v1/models/{id}: the public models the caller's key may use, and what
each accepts — from the catalog (``ModelSpec`` of the channel tried first), so a playground or a
client can show exactly the controls a model honours."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.responses import Response

from imagegate.accounts import Principal
from imagegate.api.deps import PrincipalDep, StateDep
from imagegate.api.render import json_response
from imagegate.core.errors import ModelNotFound
from imagegate.core.geometry import PUBLIC_RATIOS, format_size
from imagegate.routing import PUBLIC_MAX_N, Route, Router

router = APIRouter(tags=["models"])


def describe(name: str, route: Route, max_prompt_chars: int) -> dict[str, Any]:
    spec = route.spec
    return {
        "id": name, "object": "model", "created": 0, "owned_by": route.channel.provider,
        "capabilities": {
            "actions": sorted(spec.actions),
            "max_n": PUBLIC_MAX_N,
            "images_per_call": spec.max_n,
            "reference_images": {"max": spec.max_images, "required": spec.requires_image,
                                 "on_generations": spec.images_on_generate and spec.max_images > 0,
                                 "in_prompt_as_urls": spec.prompt_urls},
            "edit_without_image": spec.edit_without_image,
            "mask": spec.mask,
            "aspect_ratios": list(spec.aspect_ratios) if spec.aspect_ratios is not None
            else list(PUBLIC_RATIOS) if "aspect_ratio" in spec.params else [],
            "sizes": [format_size(s) for s in spec.sizes] if spec.sizes is not None else None,
            "max_side": spec.max_side,
            "size_bounds": spec.size_bounds.model_dump(exclude_none=True) if spec.size_bounds else None,
            "image_sizes": list(spec.image_sizes or ()),
            "qualities": list(spec.qualities) if spec.qualities is not None else None,
            "max_prompt_chars": min(max_prompt_chars, spec.max_prompt or max_prompt_chars),
            "params": sorted(spec.params),
            "defaults": spec.defaults,
        },
    }


def _visible(router: Router, principal: Principal) -> list[tuple[str, Route]]:
    out = []
    for name in router.models():
        route = router.first_route(name)
        if route is not None and (principal.models is None or name in principal.models):
            out.append((name, route))
    return out


@router.get("/v1/models", summary="List the models this key may use, with what each accepts")
async def list_models(state: StateDep, principal: PrincipalDep) -> Response:
    limit = state.router.max_prompt_chars
    data = [describe(name, route, limit) for name, route in _visible(state.router, principal)]
    return json_response({"object": "list", "data": data})


@router.get("/v1/models/{model_id}", summary="One model and what it accepts (actions, ratios, sizes, references)")
async def get_model(model_id: str, state: StateDep, principal: PrincipalDep) -> Response:
    route = state.router.first_route(model_id)
    if route is None or (principal.models is not None and model_id not in principal.models):
        raise ModelNotFound(f"The model {model_id!r} does not exist or this key may not use it.", param="model_id")
    return json_response(describe(model_id, route, state.router.max_prompt_chars))
