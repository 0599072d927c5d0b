"""The operator's API under ``/admin/``: accounts, top-ups, keys, usage, tasks, webhooks.

Mounted only when ``IMAGEGATE_ADMIN_TOKEN`` (``admin_token``) is set — otherwise every
``/admin/`` path is a plain 404 — and every call must send ``Authorization: Bearer <token>``.
Amounts are accepted as decimal strings or numbers in currency units (``"12.50"``) and answered
as decimal strings plus integer micro-units.
"""

from __future__ import annotations

import secrets
from decimal import Decimal
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from starlette.responses import Response

from imagegate import audit
from imagegate.accounts import create_account, create_key, find_key, parse_expiry
from imagegate.accounts import revoke_key as revoke
from imagegate.api import admin_channels
from imagegate.api.admin_channels import ActorDep
from imagegate.api.deps import StateDep, state_of
from imagegate.api.keys import key_body
from imagegate.api.render import blob_url, json_response
from imagegate.api.tasks import deliveries
from imagegate.api.usage import Before, Limit, ModelFilter, Since, StatusFilter, money, succeeded, usage_body
from imagegate.billing.ledger import credit
from imagegate.billing.prices import parse_amount
from imagegate.billing.usage import usage_report
from imagegate.core.errors import AuthenticationFailed, Conflict, InvalidRequest, NotFound, TaskNotFound
from imagegate.db.models import Account, ApiKey, Task, WebhookEndpoint
from imagegate.state import AppState
from imagegate.tasks.webhooks import resume_endpoint, retry_delivery


async def require_admin(request: Request) -> None:
    token = state_of(request).settings.admin_token or ""
    auth = request.headers.get("authorization", "")
    given = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
    if not token or not secrets.compare_digest(given.encode(), token.encode()):
        raise AuthenticationFailed("Admin calls need 'Authorization: Bearer <IMAGEGATE_ADMIN_TOKEN>'.")


router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])
router.include_router(admin_channels.router)  # channels, prices, audit log


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AccountCreate(_Body):
    name: str = Field(min_length=1, max_length=200)
    balance: Decimal = Decimal(0)
    """Opening balance in currency units."""
    unlimited: bool = False
    """Never billed (no holds, no ledger)."""


class TopUp(_Body):
    amount: Decimal


class KeyCreate(_Body):
    name: str = Field(min_length=1, max_length=200)
    account_id: str | None = None
    """Owner; default: a new unlimited account."""
    models: list[str] | None = None
    """Public model names the key may use; default: all."""
    rpm: int | None = Field(default=None, ge=1, le=2**31 - 1)
    expires: str | None = None
    """``30d``, ``12h`` … from now, or an ISO 8601 date or date-time."""
    owner: bool | None = None
    """Manages its account's keys through ``/v1/keys``; default: only a key given a new account."""


def _amount(value: Decimal, param: str) -> int:
    try:
        return parse_amount(value)
    except ValueError as exc:
        raise InvalidRequest(f"{param}: {exc}", param=param) from None


async def _account_body(state: AppState, account_id: str) -> dict[str, Any]:
    st = await state.billing.ledger.statement(account_id)
    if st is None:
        raise NotFound(f"No account {account_id!r}.", param="account_id")
    return {"id": st.account_id, "object": "account", "name": st.name, "unlimited": st.unlimited,
            **money("balance", st.balance), **money("held", st.held), "open_holds": st.open_holds,
            **money("ledger_sum", st.ledger_sum), "consistent": st.consistent}


@router.get("/accounts", summary="List accounts")
async def list_accounts(state: StateDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                        offset: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0) -> Response:
    async with state.sessions() as s:
        rows = (await s.execute(select(Account).order_by(Account.created_at, Account.id)
                                .limit(limit).offset(offset))).scalars()
        data = [{"id": a.id, "object": "account", "name": a.name, "unlimited": a.unlimited,
                 **money("balance", a.balance), "created_at": a.created_at} for a in rows]
    return json_response({"object": "list", "data": data})


@router.post("/accounts", status_code=201, summary="Create an account (optionally with a balance)")
async def new_account(state: StateDep, who: ActorDep, body: AccountCreate) -> Response:
    balance = _amount(body.balance, "balance")
    async with state.sessions.begin() as s:
        account = await create_account(s, body.name, unlimited=body.unlimited)
        await s.flush()
        if balance:
            await credit(s, account.id, balance)
        await audit.record(s, who, "account.create", f"account:{account.id}",
                           {"name": body.name, "balance": str(body.balance), "unlimited": body.unlimited})
    return json_response(await _account_body(state, account.id), status=201)


@router.get("/accounts/{account_id}", summary="An account's balance, open holds and ledger check")
async def show_account(state: StateDep, account_id: str) -> Response:
    return json_response(await _account_body(state, account_id))


@router.post("/accounts/{account_id}/topup", summary="Add money to an account")
async def topup(state: StateDep, who: ActorDep, account_id: str, body: TopUp) -> Response:
    amount = _amount(body.amount, "amount")
    if amount == 0:
        raise InvalidRequest("amount: a top-up must be positive.", param="amount")
    try:
        await state.billing.ledger.topup(account_id, amount)
    except LookupError:
        raise NotFound(f"No account {account_id!r}.", param="account_id") from None
    async with state.sessions.begin() as s:
        await audit.record(s, who, "account.topup", f"account:{account_id}", {"amount": str(body.amount)})
    return json_response(await _account_body(state, account_id))


@router.get("/keys", summary="List API keys (never their secret values)")
async def list_keys(state: StateDep, account_id: str | None = None) -> Response:
    query = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
    if account_id is not None:
        query = query.where(ApiKey.account_id == account_id)
    async with state.sessions() as s:
        data = [key_body(k) for k in (await s.execute(query)).scalars()]
    return json_response({"object": "list", "data": data})


@router.post("/keys", status_code=201, summary="Create an API key; the answer shows it once")
async def new_key(state: StateDep, who: ActorDep, body: KeyCreate) -> Response:
    try:
        expires_at = parse_expiry(body.expires) if body.expires else None
    except ValueError as exc:
        raise InvalidRequest(f"expires: {exc}", param="expires") from None
    try:
        async with state.sessions.begin() as s:
            new = await create_key(s, name=body.name, models=body.models, account_id=body.account_id,
                                   rpm=body.rpm, expires_at=expires_at, owner=body.owner)
            await audit.record(s, who, "key.create", f"key:{new.id}",
                               {"name": body.name, "account_id": new.account_id, "models": body.models,
                                "rpm": body.rpm, "expires": body.expires, "owner": body.owner})
    except LookupError:
        raise NotFound(f"No account {body.account_id!r}.", param="account_id") from None
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="models" if "model" in str(exc) else "rpm") from None
    return json_response({"id": new.id, "object": "api_key", "account_id": new.account_id, "key": new.key,
                          "webhook_secret": new.webhook_secret, "expires_at": expires_at, "owner": new.owner},
                         status=201)


@router.post("/keys/{key_id}/revoke", summary="Revoke an API key")
async def revoke_key(state: StateDep, who: ActorDep, key_id: str) -> Response:
    async with state.sessions.begin() as s:
        key = await find_key(s, key_id)
        if key is None:
            raise NotFound(f"No key {key_id!r}.", param="key_id")
        await revoke(s, key)
        await audit.record(s, who, "key.revoke", f"key:{key.id}", {"prefix": key.prefix})
        body = key_body(key)
    state.keys.forget()  # this process at once; the others when they see the ``keys`` counter move
    return json_response(body)


@router.get("/usage", summary="Usage totals and recent requests, of one account or all")
async def usage(state: StateDep, account_id: str | None = None, limit: Limit = 50, before: Before = None,
                since: Since = None, model: ModelFilter = None, status: StatusFilter = None) -> Response:
    await state.usage_log.flush()
    async with state.sessions() as s:
        report = await usage_report(s, account_id, limit=limit, before=before, since=since, model=model,
                                    succeeded=succeeded(status))
    return json_response({"object": "usage", "account_id": account_id, **usage_body(report, partial(blob_url, state))})


@router.get("/tasks", summary="List async tasks, newest first")
async def list_tasks(state: StateDep, status: str | None = None, account_id: str | None = None,
                     limit: Annotated[int, Query(ge=1, le=500)] = 50) -> Response:
    query = select(Task).order_by(Task.submit_time.desc()).limit(limit)
    if status is not None:
        query = query.where(Task.status == status.upper())
    if account_id is not None:
        query = query.where(Task.account_id == account_id)
    async with state.sessions() as s:
        data = [_task_row(t) for t in (await s.execute(query)).scalars()]
    return json_response({"object": "list", "data": data})


def _task_row(t: Task) -> dict[str, Any]:
    return {"task_id": t.id, "account_id": t.account_id, "key_id": t.key_id, "action": t.action,
            "model": t.model, "status": t.status, "progress": t.progress, "fail_reason": t.fail_reason,
            "attempts": t.attempts, "submit_time": int(t.submit_time),
            "finish_time": int(t.finish_time) if t.finish_time else None, "hold_id": t.hold_id}


@router.get("/tasks/{task_id}", summary="One task: its row, request, result and webhook deliveries")
async def show_task(state: StateDep, task_id: str) -> Response:
    async with state.sessions() as s:
        t = await s.get(Task, task_id.lower())
    if t is None:
        raise TaskNotFound(f"No task {task_id!r}.", param="task_id")
    return json_response({**_task_row(t), "request": t.request, "result": t.result, "webhook_url": t.webhook_url,
                          "webhooks": await deliveries(state, t.id)})


@router.post("/webhooks/deliveries/{delivery_id}/retry", summary="Send one webhook delivery again, now")
async def retry_webhook(state: StateDep, who: ActorDep, delivery_id: str) -> Response:
    try:
        d = await retry_delivery(state.sessions, delivery_id)
    except LookupError as exc:
        raise NotFound(str(exc), param="delivery_id") from None
    except ValueError as exc:
        raise Conflict(str(exc), param="delivery_id") from None
    async with state.sessions.begin() as s:
        await audit.record(s, who, "webhook.retry", f"webhook_delivery:{d.id}", {"task_id": d.task_id, "url": d.url})
    return json_response({"id": d.id, "object": "webhook.delivery", "task_id": d.task_id, "url": d.url,
                          "status": d.status, "attempts": d.attempts})


class WebhookResume(_Body):
    url: str = Field(min_length=1)


@router.get("/webhooks", summary="Webhook URLs with failures: failed attempts in a row, paused or not")
async def list_webhook_endpoints(state: StateDep) -> Response:
    async with state.sessions() as s:
        rows = (await s.execute(select(WebhookEndpoint).where(WebhookEndpoint.consecutive_failures > 0)
                                .order_by(WebhookEndpoint.url))).scalars()
        data = [{"url": e.url, "consecutive_failures": e.consecutive_failures, "paused": e.paused_at is not None,
                 "paused_at": int(e.paused_at) if e.paused_at else None, "last_error": e.last_error} for e in rows]
    return json_response({"object": "list", "data": data})


@router.post("/webhooks/resume", summary="Resume a paused webhook URL: its pending deliveries are sent at once")
async def resume_webhooks(state: StateDep, who: ActorDep, body: WebhookResume) -> Response:
    try:
        due = await resume_endpoint(state.sessions, body.url)
    except LookupError as exc:
        raise NotFound(str(exc), param="url") from None
    async with state.sessions.begin() as s:
        await audit.record(s, who, "webhook.resume", f"webhook:{body.url}", {"pending_deliveries": due})
    return json_response({"url": body.url, "paused": False, "pending_deliveries": due})
