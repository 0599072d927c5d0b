"""GET /v1/usage: the caller's own account — balance, usage totals, recent requests.

Amounts come twice: a decimal string in currency units (``"1.250000"``, exact, never a float)
and the integer ``*_micros`` the ledger keeps. Recent requests are newest first; pass the
``next_before`` of one page as ``before`` to read the next.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from starlette.responses import Response

from imagegate.api.deps import PrincipalDep, StateDep
from imagegate.api.render import blob_url, json_response
from imagegate.billing.prices import from_micro
from imagegate.billing.usage import UsageReport, usage_report
from imagegate.db.models import UsageRecord

router = APIRouter(tags=["usage"])


def money(name: str, micros: int) -> dict[str, Any]:
    return {name: from_micro(micros), f"{name}_micros": micros}


UrlFor = Callable[[str], str]
"""A stored image's key → a signed URL of it."""


def usage_row(r: UsageRecord, url_for: UrlFor) -> dict[str, Any]:
    return {"id": r.id, "request_id": r.request_id, "account_id": r.account_id, "key_id": r.key_id,
            "model": r.model, "channel": r.channel, "surface": r.surface, "status": r.status,
            "images": r.images, **money("cost", r.cost), "latency_ms": r.latency_ms,
            "created_at": int(r.created_at), "image_urls": [url_for(b) for b in r.blobs or ()]}


def usage_body(report: UsageReport, url_for: UrlFor) -> dict[str, Any]:
    return {
        "totals": {
            "requests": report.requests, "succeeded": report.succeeded,
            "failed": report.requests - report.succeeded, "images": report.images,
            **money("cost", report.cost),
            "by_model": {m: {"requests": t.requests, "succeeded": t.succeeded, "images": t.images,
                             **money("cost", t.cost)} for m, t in report.by_model.items()},
        },
        "data": [usage_row(r, url_for) for r in report.recent],
        "has_more": report.has_more,
        "next_before": report.recent[-1].id if report.has_more and report.recent else None,
    }


Limit = Annotated[int, Query(ge=1, le=500, description="Recent requests per page")]
Before = Annotated[int | None, Query(ge=1, le=2**63 - 1, description="Cursor: `next_before` of the previous page")]
Since = Annotated[float | None, Query(ge=0, description="Only requests from this Unix time on")]
ModelFilter = Annotated[str | None, Query(max_length=200, description="Only requests for this model")]
Outcome = Literal["success", "failed"]
StatusFilter = Annotated[Outcome | None, Query(description="Only succeeded or only failed requests")]


def succeeded(status: Outcome | None) -> bool | None:
    return None if status is None else status == "success"


@router.get("/v1/usage", summary="Balance, usage totals and recent requests of the caller's account")
async def usage(state: StateDep, principal: PrincipalDep, limit: Limit = 20, before: Before = None,
                since: Since = None, model: ModelFilter = None, status: StatusFilter = None) -> Response:
    await state.usage_log.flush()  # this process's latest requests, so a caller sees its own at once
    async with state.sessions() as s:
        report = await usage_report(s, principal.account_id, limit=limit, before=before, since=since, model=model,
                                    succeeded=succeeded(status))
    statement = await state.billing.ledger.statement(principal.account_id)
    balance = statement.balance if statement else 0
    held = statement.held if statement else 0
    return json_response({
        "object": "usage", "account_id": principal.account_id, "unlimited": principal.unlimited,
        **money("balance", balance), **money("held", held), **usage_body(report, partial(blob_url, state)),
    })
