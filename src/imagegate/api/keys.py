"""The caller's keys: ``GET /v1/keys/self`` (any key: itself, with its webhook signing secret) and,
for an account's *owner* keys, ``GET/POST /v1/keys`` and ``POST /v1/keys/{key_id}/revoke``.

An owner manages its own account's keys without the operator, and can never give more than it
has: a key it creates may use only models the owner may use, at most the owner's ``rpm``, expiring
no later than the owner; it is never an owner itself (owners are the operator's to make). An owner
cannot revoke itself (that is how an account locks itself out); another owner or the operator can.
Keys of other accounts are answered exactly like missing ones.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from starlette.responses import Response

from imagegate import audit
from imagegate.accounts import Principal, create_key, parse_expiry, revoke_key
from imagegate.api.deps import PrincipalDep, StateDep
from imagegate.api.render import json_response
from imagegate.core.errors import AuthenticationFailed, InvalidRequest, NotFound, PermissionDenied
from imagegate.db.models import ApiKey

router = APIRouter(tags=["keys"])


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    models: list[str] | None = Field(default=None, max_length=1000)
    """Public model names the key may use; default: the owner's."""
    rpm: int | None = Field(default=None, ge=1, le=2**31 - 1)
    """Requests per minute; default: the owner's."""
    expires: str | None = Field(default=None, max_length=64)
    """``30d``, ``12h`` … from now, or an ISO 8601 date; default: the owner's expiry."""


def key_body(k: ApiKey, caller: str | None = None) -> dict[str, Any]:
    """A key as the API shows it: never its secret value (only its prefix)."""
    body: dict[str, Any] = {
        "id": k.id, "object": "api_key", "account_id": k.account_id, "name": k.name, "prefix": k.prefix,
        "owner": k.owner, "models": k.models, "rpm": k.rpm, "created_at": int(k.created_at),
        "expires_at": int(k.expires_at) if k.expires_at is not None else None,
        "revoked_at": int(k.revoked_at) if k.revoked_at is not None else None,
    }
    if caller is not None:
        body["self"] = k.id == caller
    return body


def _owner(principal: Principal) -> None:
    if not principal.owner:
        raise PermissionDenied("Only an owner key manages its account's keys; this key is not one.",
                               code="not_owner")


def actor(principal: Principal) -> str:
    """The audit log's "who" for an owner's action."""
    return f"key:{principal.key_id}"


@router.get("/v1/keys/self", summary="The calling API key, with its webhook signing secret")
async def key_self(state: StateDep, principal: PrincipalDep) -> Response:
    async with state.sessions() as s:
        key = await s.get(ApiKey, principal.key_id)
    if key is None:  # deleted since the key cache verified it
        raise AuthenticationFailed("Incorrect API key provided.")
    return json_response({**key_body(key), "webhook_secret": key.webhook_secret})


@router.get("/v1/keys", summary="Owner keys: every key of the account, newest first")
async def list_keys(state: StateDep, principal: PrincipalDep) -> Response:
    _owner(principal)
    async with state.sessions() as s:
        rows = (await s.execute(select(ApiKey).where(ApiKey.account_id == principal.account_id)
                                .order_by(ApiKey.created_at.desc(), ApiKey.id))).scalars()
        data = [key_body(k, principal.key_id) for k in rows]
    return json_response({"object": "list", "data": data})


def _limits(principal: Principal, body: KeyCreate, served: set[str]) -> tuple[list[str] | None, int | None,
                                                                              float | None]:
    """The new key's models, rpm and expiry: as asked, within the owner's own."""
    models = body.models
    if models is not None:
        models = sorted({m.strip() for m in models if m.strip()})
        if not models:
            raise InvalidRequest("models: name at least one model, or omit it for the owner's models.",
                                 param="models")
        unknown = [m for m in models if m not in served]
        if unknown:
            raise InvalidRequest(f"models: not served here: {', '.join(unknown)}.", param="models")
        beyond = [m for m in models if principal.models is not None and m not in principal.models]
        if beyond:
            raise PermissionDenied(f"models: this key may not use {', '.join(beyond)}, so it cannot grant it.",
                                   param="models")
    elif principal.models is not None:
        models = sorted(principal.models)
    rpm = body.rpm if body.rpm is not None else principal.rpm
    if principal.rpm is not None and rpm is not None and rpm > principal.rpm:
        raise PermissionDenied(f"rpm: at most this key's own rpm ({principal.rpm}).", param="rpm",
                               code="beyond_own_limits")
    expires_at = principal.expires_at
    if body.expires is not None:
        try:
            expires_at = parse_expiry(body.expires)
        except ValueError as exc:
            raise InvalidRequest(f"expires: {exc}", param="expires") from None
        if principal.expires_at is not None and expires_at > principal.expires_at:
            raise PermissionDenied("expires: no later than this key's own expiry.", param="expires",
                                   code="beyond_own_limits")
    return models, rpm, expires_at


@router.post("/v1/keys", status_code=201, summary="Owner keys: create a key for the account; shown once")
async def new_key(state: StateDep, principal: PrincipalDep, body: KeyCreate) -> Response:
    _owner(principal)
    models, rpm, expires_at = _limits(principal, body, set(state.router.models()))
    async with state.sessions.begin() as s:
        made = await create_key(s, name=body.name, models=models, account_id=principal.account_id, rpm=rpm,
                                expires_at=expires_at, owner=False)
        await audit.record(s, actor(principal), "key.create", f"key:{made.id}",
                           {"name": body.name, "account_id": made.account_id, "models": models, "rpm": rpm})
        row = await s.get(ApiKey, made.id)
        assert row is not None
        answer = {**key_body(row), "key": made.key, "webhook_secret": made.webhook_secret}
    return json_response(answer, status=201)


@router.post("/v1/keys/{key_id}/revoke", summary="Owner keys: revoke a key of the account")
async def revoke(state: StateDep, principal: PrincipalDep, key_id: str) -> Response:
    _owner(principal)
    if key_id == principal.key_id:
        raise InvalidRequest("A key cannot revoke itself: use another owner key, or ask the operator.",
                             param="key_id")
    async with state.sessions.begin() as s:
        key = await s.get(ApiKey, key_id)
        if key is None or key.account_id != principal.account_id:
            raise NotFound(f"No key {key_id!r} in this account.", param="key_id")
        await revoke_key(s, key)
        await audit.record(s, actor(principal), "key.revoke", f"key:{key.id}", {"prefix": key.prefix})
        body = key_body(key, principal.key_id)
    state.keys.forget()  # this process at once; the others when they see the ``keys`` counter move
    return json_response(body)
