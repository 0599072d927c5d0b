"""GET /v1/models: the public model names the caller's key may use."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from imagegate.api.deps import PrincipalDep, StateDep
from imagegate.api.render import json_response

router = APIRouter(tags=["models"])


@router.get("/v1/models", summary="List the models this key may use")
async def list_models(state: StateDep, principal: PrincipalDep) -> Response:
    data = [
        {"id": name, "object": "model", "created": 0, "owned_by": provider}
        for name, provider in state.router.models().items()
        if principal.models is None or name in principal.models
    ]
    return json_response({"object": "list", "data": data})
