"""The operator's API for what changes at runtime: channels (with their health in this process),
model prices, and the audit log. Mounted under ``/admin/`` by ``admin.py`` (same token).

Channels from the configuration file are listed read-only (PATCH/DELETE on them: 409); channels
made here live in the database, and every process serves a change within a second (the
``channels`` change counter). Health (breaker state, success rate, latency, in flight) is this
process's: the answer names the process (``process``).
"""

from __future__ import annotations

import os
import re
import time
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request
from pydantic import ValidationError
from sqlalchemy import select
from starlette.responses import Response

from imagegate import audit, channelstore
from imagegate.api.deps import StateDep
from imagegate.api.render import json_response
from imagegate.config import ChannelConfig, ConfigError, PriceConfig
from imagegate.core.errors import Conflict, ImagegateError, InvalidRequest, NotFound
from imagegate.core.job import ImageJob
from imagegate.db.models import ChannelRow, PriceRow
from imagegate.epochs import PRICES, bump
from imagegate.routing import Route, Router, validate
from imagegate.state import AppState

router = APIRouter()
TEST_PROMPT = "a small red circle on a white background"


def actor(request: Request) -> str:
    """Who calls: the fingerprint of the admin token sent (checked by the parent router)."""
    auth = request.headers.get("authorization", "")
    return audit.admin_actor(auth[7:].strip())


ActorDep = Annotated[str, Depends(actor)]
JsonBody = Annotated[dict[str, Any], Body()]


def invalid(exc: ValidationError) -> InvalidRequest:
    first = exc.errors()[0]
    param = ".".join(str(p) for p in first["loc"]) or None
    return InvalidRequest(f"{param or 'body'}: {first['msg']}", param=param)


def config_invalid(exc: ConfigError) -> InvalidRequest:
    text = str(exc)
    m = re.match(r"channels\.\d+\.(\w+)", text) or re.search(r"\b(options)\.", text)
    return InvalidRequest(re.sub(r"^channels\.\d+\.", "", text), param=m[1] if m else None)


def _channel_body(state: AppState, cfg: ChannelConfig, *, source: str, disabled: bool = False) -> dict[str, Any]:
    return {"object": "channel", **channelstore.view(cfg), "source": source, "read_only": source == "config",
            "disabled": disabled, "serves": sorted(state.router.routes_of(cfg.name)),
            "health": state.health.snapshot(cfg.name)}


async def _listing(state: AppState) -> list[dict[str, Any]]:
    data = [_channel_body(state, c, source="config") for c in state.channels.configured]
    async with state.sessions() as s:
        rows = await channelstore.rows(s)
    names = state.channels.configured_names
    data += [_channel_body(state, channelstore.config_of(r, state.channels.sealer), source="database",
                           disabled=r.disabled) for r in rows if r.name not in names]
    return data


def _read_only(state: AppState, name: str) -> None:
    if name in state.channels.configured_names:
        raise Conflict(f"The channel {name!r} is defined in the configuration file: it is read-only here "
                       "(edit the file and restart).", param="name", code="channel_read_only")


@router.get("/channels", summary="Channels (configuration and database) with their health in this process")
async def list_channels(state: StateDep) -> Response:
    return json_response({"object": "list", "process": os.getpid(), "data": await _listing(state)})


@router.get("/channels/{name}", summary="One channel and its health in this process")
async def show_channel(state: StateDep, name: str) -> Response:
    for c in await _listing(state):
        if c["name"] == name:
            return json_response({**c, "process": os.getpid()})
    raise NotFound(f"No channel {name!r}.", param="name")


@router.post("/channels", status_code=201, summary="Add a channel (the fields of a YAML channel); serves at once")
async def add_channel(state: StateDep, who: ActorDep, body: JsonBody) -> Response:
    try:
        cfg = ChannelConfig.model_validate(body)
    except ValidationError as exc:
        raise invalid(exc) from None
    _read_only(state, cfg.name)
    try:
        channelstore.check([cfg], state.http, state.channels.catalog)
    except ConfigError as exc:
        raise config_invalid(exc) from None
    try:
        async with state.sessions.begin() as s:
            await channelstore.add(s, cfg, state.channels.sealer)
            await audit.record(s, who, "channel.create", f"channel:{cfg.name}", channelstore.view(cfg))
    except channelstore.ChannelExists as exc:
        raise Conflict(str(exc), param="name", code="channel_exists") from None
    await state.channels.reload()  # this process at once; the others when they see the counter move
    return json_response(_channel_body(state, cfg, source="database"), status=201)


@router.patch("/channels/{name}", summary="Edit, disable (`disabled: true`) or re-enable a database channel")
async def edit_channel(state: StateDep, who: ActorDep, name: str, body: JsonBody) -> Response:
    _read_only(state, name)
    changes = dict(body)
    disabled = changes.pop("disabled", None)
    if disabled is not None and not isinstance(disabled, bool):
        raise InvalidRequest("disabled: must be true or false.", param="disabled")
    async with state.sessions.begin() as s:
        row = await _row(s, name)
        try:
            cfg = channelstore.merged(row, changes, state.channels.sealer)
        except ValidationError as exc:
            raise invalid(exc) from None
        except ValueError as exc:
            raise InvalidRequest(str(exc), param="name") from None
        try:
            channelstore.check([cfg], state.http, state.channels.catalog)
        except ConfigError as exc:
            raise config_invalid(exc) from None
        if changes:
            await channelstore.edit(s, row, cfg, state.channels.sealer)
        if disabled is not None:
            await channelstore.set_disabled(s, row, disabled)
        action = "channel.update" if changes else ("channel.disable" if disabled else "channel.enable")
        await audit.record(s, who, action, f"channel:{name}",
                           {"changes": changes, **({"disabled": disabled} if disabled is not None else {})})
        now_disabled = row.disabled
    await state.channels.reload()
    return json_response(_channel_body(state, cfg, source="database", disabled=now_disabled))


@router.delete("/channels/{name}", summary="Remove a database channel")
async def delete_channel(state: StateDep, who: ActorDep, name: str) -> Response:
    _read_only(state, name)
    async with state.sessions.begin() as s:
        row = await _row(s, name)
        await channelstore.remove(s, row)
        await audit.record(s, who, "channel.delete", f"channel:{name}")
    await state.channels.reload()
    return json_response({"object": "channel", "name": name, "deleted": True})


async def _row(session: Any, name: str) -> ChannelRow:
    try:
        return await channelstore.find(session, name)
    except LookupError:
        raise NotFound(f"No channel {name!r} in the database.", param="name") from None


async def _routes(state: AppState, name: str) -> dict[str, Route]:
    """The routes of channel ``name``: from the router in force, or (a disabled channel) built apart."""
    routes = state.router.routes_of(name)
    if routes or name in state.channels.configured_names:
        return routes
    async with state.sessions() as s:
        row = await _row(s, name)
        cfg = channelstore.config_of(row, state.channels.sealer)
    return Router.build([cfg], state.http, state.channels.catalog).routes_of(name)


async def run_test(state: AppState, name: str, model: str | None) -> dict[str, Any]:
    """One real minimal request through channel ``name`` (past its breaker): its latency and verdict."""
    routes = await _routes(state, name)
    if not routes:
        raise NotFound(f"No channel {name!r} serving a model.", param="name")
    if model is not None and model not in routes:
        raise InvalidRequest(f"The channel {name!r} does not serve {model!r}; it serves {', '.join(routes)}.",
                             param="model")
    public = model or next(iter(routes))
    route = routes[public]
    job = ImageJob(model=public, prompt=TEST_PROMPT, response_format="b64_json")
    validate(job, route, max_prompt_chars=state.router.max_prompt_chars)
    started = time.monotonic()
    result: dict[str, Any] = {"object": "channel_test", "channel": name, "model": public}
    try:
        outcome = await state.gateway.try_route(route, job)
    except ImagegateError as exc:
        return {**result, "ok": False, "latency_ms": round((time.monotonic() - started) * 1000),
                "error": {"code": exc.code, "status": exc.status, "message": exc.message}}
    return {**result, "ok": True, "latency_ms": round((time.monotonic() - started) * 1000),
            "images": len(outcome.delivered)}


@router.post("/channels/{name}/test", summary="Send one real minimal request through a channel: latency and verdict")
async def test_channel(state: StateDep, who: ActorDep, name: str, model: str | None = None) -> Response:
    result = await run_test(state, name, model)
    async with state.sessions.begin() as s:
        await audit.record(s, who, "channel.test", f"channel:{name}",
                           {"model": result["model"], "ok": result["ok"], "latency_ms": result["latency_ms"]})
    return json_response(result)


# ---- prices -------------------------------------------------------------------------------------


def _price_body(model: str, price: PriceConfig, source: str) -> dict[str, Any]:
    return {"object": "price", "model": model, "source": source, **price.model_dump(mode="json")}


@router.get("/prices", summary="Model prices in force: the configuration's, overridden by the database's")
async def list_prices(state: StateDep) -> Response:
    async with state.sessions() as s:
        stored = {r.model for r in (await s.execute(select(PriceRow))).scalars()}
    table = state.billing.pricer.table()
    data = [_price_body(m, p, "database" if m in stored else "config") for m, p in sorted(table.items())]
    return json_response({"object": "list", "data": data})


@router.get("/prices/{model}", summary="A model's price in force")
async def show_price(state: StateDep, model: str) -> Response:
    price = state.billing.pricer.table().get(model)
    if price is None:
        raise NotFound(f"No price for {model!r}: it is free.", param="model")
    async with state.sessions() as s:
        stored = await s.get(PriceRow, model) is not None
    return json_response(_price_body(model, price, "database" if stored else "config"))


@router.put("/prices/{model}", summary="Set a model's price (overrides the configuration's); in force at once")
async def set_price(state: StateDep, who: ActorDep, model: str, body: JsonBody) -> Response:
    try:
        price = PriceConfig.model_validate(body)
    except ValidationError as exc:
        raise invalid(exc) from None
    stored = price.model_dump(mode="json", exclude_unset=True)
    async with state.sessions.begin() as s:
        row = await s.get(PriceRow, model)
        if row is None:
            s.add(PriceRow(model=model, price=stored, updated_at=time.time()))
        else:
            row.price, row.updated_at = stored, time.time()
        await bump(s, PRICES)
        await audit.record(s, who, "price.set", f"price:{model}", stored)
    await state.reload_prices()
    return json_response(_price_body(model, price, "database"))


@router.delete("/prices/{model}", summary="Drop a model's database price (the configuration's applies again)")
async def delete_price(state: StateDep, who: ActorDep, model: str) -> Response:
    async with state.sessions.begin() as s:
        row = await s.get(PriceRow, model)
        if row is None:
            raise NotFound(f"No database price for {model!r}.", param="model")
        await s.delete(row)
        await bump(s, PRICES)
        await audit.record(s, who, "price.delete", f"price:{model}")
    await state.reload_prices()
    return json_response({"object": "price", "model": model, "deleted": True})


# ---- audit --------------------------------------------------------------------------------------


@router.get("/audit", summary="Operator actions, newest first (page with `before=<id>`)")
async def audit_log(state: StateDep, limit: Annotated[int, Query(ge=1, le=500)] = 50,
                    before: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
                    action: str | None = None) -> Response:
    async with state.sessions() as s:
        data = await audit.page(s, limit=limit, before=before, action=action)
    more = len(data) == limit
    return json_response({"object": "list", "data": data, "has_more": more,
                          "next_before": data[-1]["id"] if more and data else None})
