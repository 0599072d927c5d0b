"""Annotated dependencies shared by the routes."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request

from imagegate.accounts import Principal
from imagegate.gateway import Gateway
from imagegate.ratelimit import Kind
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


async def _authenticated(request: Request, kind: Kind) -> Principal:
    state = state_of(request)
    who = await state.keys.authenticate(api_key(request))
    await state.limiter.hit(who, kind)
    return who


async def principal(request: Request) -> Principal:
    """The caller of a read (a task, models, usage, the key itself): the generous read window."""
    return await _authenticated(request, "read")


async def work_principal(request: Request) -> Principal:
    """The caller of a request that creates work (images, chat completions, generateContent):
    counted against the key's ``rpm``."""
    return await _authenticated(request, "work")


StateDep = Annotated[AppState, Depends(app_state)]
PrincipalDep = Annotated[Principal, Depends(principal)]
"""For reads: their own window of ``max(60, 10 × rpm)`` per minute (``ratelimit.py``)."""
WorkPrincipalDep = Annotated[Principal, Depends(work_principal)]
"""For routes that create work (upstream calls, money): the key's ``rpm``."""


async def gateway(request: Request) -> Gateway:
    return state_of(request).gateway


GatewayDep = Annotated[Gateway, Depends(gateway)]
