"""Annotated dependencies shared by the routes."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request

from imagegate.accounts import Principal
from imagegate.gateway import Gateway
from imagegate.state import AppState


async def app_state(request: Request) -> AppState:
    # ``async``: FastAPI runs a plain ``def`` dependency in its thread pool, a hop per request.
    return state_of(request)


def state_of(request: Request) -> AppState:
    return cast(AppState, request.app.state.ig)


def api_key(request: Request) -> str | None:
    """``Authorization: Bearer``, or the Google forms ``x-goog-api-key`` and ``?key=``."""
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return request.headers.get("x-goog-api-key") or request.query_params.get("key")


async def principal(request: Request) -> Principal:
    state = state_of(request)
    who = await state.keys.authenticate(api_key(request))
    await state.limiter.hit(who)
    return who


StateDep = Annotated[AppState, Depends(app_state)]
PrincipalDep = Annotated[Principal, Depends(principal)]


async def gateway(request: Request) -> Gateway:
    return state_of(request).gateway


GatewayDep = Annotated[Gateway, Depends(gateway)]
