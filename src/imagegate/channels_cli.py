"""``imagegate channels …`` and ``imagegate prices …``: the operator commands for what changes at
runtime.

``channels list`` and ``channels test`` ask the running gateway through its admin API (health is
in each process's memory, and a test runs where the traffic runs): ``--base-url`` (default the
configuration's ``public_url``) and ``--admin-token`` (default ``admin_token`` /
``$IMAGEGATE_ADMIN_TOKEN``). ``add``, ``edit``, ``disable``, ``enable``, ``remove`` and the price
commands write the database directly, like the other operator commands; every running process
picks the change up within a second. Each writes an audit row (``cli:user@host``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

import yaml
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from imagegate import audit, channelstore
from imagegate.catalog import Catalog
from imagegate.config import ChannelConfig, ConfigError, PriceConfig, Settings
from imagegate.db.migrate import upgrade
from imagegate.db.models import PriceRow
from imagegate.db.session import make_engine, make_sessionmaker
from imagegate.epochs import PRICES, bump
from imagegate.net import make_session
from imagegate.routing import Router
from imagegate.state import url_secret
from imagegate.tables import print_table

Handler = Callable[[Settings, argparse.Namespace], Awaitable[None]]


# ---- through the running gateway ----------------------------------------------------------------


def _call(settings: Settings, args: argparse.Namespace, method: str, path: str) -> tuple[int, Any]:
    base = (args.base_url or settings.public_url).rstrip("/")
    token = args.admin_token or settings.admin_token
    if not token:
        raise SystemExit("imagegate: no admin token: pass --admin-token or set IMAGEGATE_ADMIN_TOKEN")
    request = urllib.request.Request(base + "/admin" + path, method=method,
                                     headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        body = json.loads(exc.read() or b"{}")
        message = body.get("error", {}).get("message", exc.reason)
        raise SystemExit(f"imagegate: the gateway answered {exc.code}: {message}") from None
    except OSError as exc:
        raise SystemExit(f"imagegate: cannot reach the gateway at {base}: {exc}") from None


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


async def channels_list(settings: Settings, args: argparse.Namespace) -> None:
    _, body = await asyncio.to_thread(_call, settings, args, "GET", "/channels")
    rows = []
    for c in body["data"]:
        h = c["health"]
        state = "disabled" if c["disabled"] else h["state"]
        rows.append([c["name"], c["source"], c["provider"], state, _pct(h["success_rate"]),
                     h["latency_ms"] if h["latency_ms"] is not None else "-", h["inflight"],
                     h["successes"] + h["failures"], ",".join(c["serves"]) or "-"])
    print_table(["name", "source", "provider", "state", "success", "latency ms", "in flight", "requests",
                 "models"], rows)
    print(f"(health as seen by gateway process {body['process']})")


async def channels_test(settings: Settings, args: argparse.Namespace) -> None:
    path = f"/channels/{urllib.parse.quote(args.name, safe='')}/test"
    if args.model:
        path += "?model=" + urllib.parse.quote(args.model, safe="")
    _, r = await asyncio.to_thread(_call, settings, args, "POST", path)
    verdict = "ok" if r["ok"] else f"FAILED: {r['error']['code']}: {r['error']['message']}"
    print(f"channel {r['channel']} model {r['model']}: {verdict} in {r['latency_ms']} ms")
    if not r["ok"]:
        raise SystemExit(1)


# ---- straight into the database -----------------------------------------------------------------


def _db(fn: Callable[[Settings, AsyncSession, channelstore.Sealer, argparse.Namespace], Awaitable[None]]) -> Handler:
    async def run(settings: Settings, args: argparse.Namespace) -> None:
        await asyncio.to_thread(upgrade, settings.database_url)
        engine = make_engine(settings.database_url)
        try:
            sessions = make_sessionmaker(engine)
            sealer = channelstore.Sealer(await url_secret(settings, sessions))
            async with sessions.begin() as session:
                await fn(settings, session, sealer, args)
        finally:
            await engine.dispose()

    return run


def _fields(args: argparse.Namespace) -> dict[str, Any]:
    """The channel fields the command line gives (only those)."""
    out: dict[str, Any] = {}
    for flag, key in (("provider", "provider"), ("url", "base_url"), ("priority", "priority"),
                      ("weight", "weight"), ("channel_timeout", "timeout"), ("max_inflight", "max_inflight"),
                      ("rpm", "rpm")):
        if getattr(args, flag, None) is not None:
            out[key] = getattr(args, flag)
    if args.api_key_env:
        if not os.environ.get(args.api_key_env):
            raise SystemExit(f"imagegate: --api-key-env: ${args.api_key_env} is not set")
        out["api_key"] = os.environ[args.api_key_env]
    elif args.api_key is not None:
        out["api_key"] = args.api_key
    if args.model:
        models = {}
        for pair in args.model:
            public, sep, upstream = pair.partition("=")
            if not public:
                raise SystemExit(f"imagegate: --model {pair!r}: expected PUBLIC[=UPSTREAM]")
            models[public] = upstream if sep else public
        out["models"] = models
    for pair in args.set or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"imagegate: --set {pair!r}: expected KEY=VALUE (VALUE in YAML)")
        out[key] = yaml.safe_load(value)
    return out


async def _checked(settings: Settings, cfg: ChannelConfig) -> None:
    http = make_session()
    try:
        channelstore.check([cfg], http, Catalog.load(settings.catalog))
    except ConfigError as exc:
        raise SystemExit(f"imagegate: {exc}") from None
    finally:
        await http.close()


def _configured(settings: Settings, name: str) -> None:
    if any(c.name == name for c in settings.channels or ()):
        raise SystemExit(f"imagegate: channel {name!r} is defined in the configuration file: edit it there")


def _invalid(exc: ValidationError) -> SystemExit:
    first = exc.errors()[0]
    return SystemExit(f"imagegate: {'.'.join(str(p) for p in first['loc'])}: {first['msg']}")


@_db
async def channels_add(settings: Settings, session: AsyncSession, sealer: channelstore.Sealer,
                       args: argparse.Namespace) -> None:
    _configured(settings, args.name)
    try:
        cfg = ChannelConfig.model_validate({**_fields(args), "name": args.name})
    except ValidationError as exc:
        raise _invalid(exc) from None
    await _checked(settings, cfg)
    try:
        await channelstore.add(session, cfg, sealer)
    except channelstore.ChannelExists as exc:
        raise SystemExit(f"imagegate: {exc}") from None
    await audit.record(session, audit.cli_actor(), "channel.create", f"channel:{cfg.name}", channelstore.view(cfg))
    print(f"added channel {cfg.name} ({cfg.provider}); running gateways serve it within a second")


async def _row(session: AsyncSession, name: str) -> Any:
    try:
        return await channelstore.find(session, name)
    except LookupError as exc:
        raise SystemExit(f"imagegate: {exc}") from None


@_db
async def channels_edit(settings: Settings, session: AsyncSession, sealer: channelstore.Sealer,
                        args: argparse.Namespace) -> None:
    _configured(settings, args.name)
    row = await _row(session, args.name)
    changes = _fields(args)
    if not changes:
        raise SystemExit("imagegate: nothing to change (see imagegate channels edit --help)")
    try:
        cfg = channelstore.merged(row, changes, sealer)
    except ValidationError as exc:
        raise _invalid(exc) from None
    except ValueError as exc:
        raise SystemExit(f"imagegate: {exc}") from None
    await _checked(settings, cfg)
    await channelstore.edit(session, row, cfg, sealer)
    await audit.record(session, audit.cli_actor(), "channel.update", f"channel:{args.name}", {"changes": changes})
    print(f"updated channel {args.name}")


def _switch(disabled: bool) -> Handler:
    @_db
    async def run(settings: Settings, session: AsyncSession, sealer: channelstore.Sealer,
                  args: argparse.Namespace) -> None:
        _configured(settings, args.name)
        row = await _row(session, args.name)
        await channelstore.set_disabled(session, row, disabled)
        action = "channel.disable" if disabled else "channel.enable"
        await audit.record(session, audit.cli_actor(), action, f"channel:{args.name}", {"disabled": disabled})
        print(f"channel {args.name} {'disabled' if disabled else 'enabled'}")

    return run


@_db
async def channels_remove(settings: Settings, session: AsyncSession, sealer: channelstore.Sealer,
                          args: argparse.Namespace) -> None:
    _configured(settings, args.name)
    row = await _row(session, args.name)
    await channelstore.remove(session, row)
    await audit.record(session, audit.cli_actor(), "channel.delete", f"channel:{args.name}")
    print(f"removed channel {args.name}")


@_db
async def prices_set(settings: Settings, session: AsyncSession, sealer: channelstore.Sealer,
                     args: argparse.Namespace) -> None:
    raw: dict[str, Any] = yaml.safe_load(args.json) if args.json else {}
    if args.per_image is not None:
        raw["per_image"] = args.per_image
    try:
        price = PriceConfig.model_validate(raw)
    except ValidationError as exc:
        raise _invalid(exc) from None
    stored = price.model_dump(mode="json", exclude_unset=True)
    row = await session.get(PriceRow, args.model)
    if row is None:
        session.add(PriceRow(model=args.model, price=stored, updated_at=time.time()))
    else:
        row.price, row.updated_at = stored, time.time()
    await bump(session, PRICES)
    await audit.record(session, audit.cli_actor(), "price.set", f"price:{args.model}", stored)
    print(f"price of {args.model}: {json.dumps(stored)}")


@_db
async def prices_remove(settings: Settings, session: AsyncSession, sealer: channelstore.Sealer,
                        args: argparse.Namespace) -> None:
    row = await session.get(PriceRow, args.model)
    if row is None:
        raise SystemExit(f"imagegate: no database price for {args.model!r}")
    await session.delete(row)
    await bump(session, PRICES)
    await audit.record(session, audit.cli_actor(), "price.delete", f"price:{args.model}")
    print(f"removed the database price of {args.model}; the configuration's applies again")


async def stored_models(settings: Settings) -> set[str]:
    """Public model names the enabled database channels serve (their keys are not needed for that)."""
    await asyncio.to_thread(upgrade, settings.database_url)
    engine = make_engine(settings.database_url)
    http = make_session()
    try:
        async with make_sessionmaker(engine)() as session:
            configs = [ChannelConfig.model_validate({**r.config, "name": r.name})
                       for r in await channelstore.rows(session) if not r.disabled]
        catalog = Catalog.load(settings.catalog)
        models: set[str] = set()
        for cfg in configs:
            try:
                models |= set(Router.build([cfg], http, catalog).models())
            except ConfigError:
                continue  # left out by the gateway too
        return models
    finally:
        await http.close()
        await engine.dispose()


def _channel_flags(p: argparse.ArgumentParser, *, adding: bool) -> None:
    p.add_argument("name")
    p.add_argument("--provider", required=adding, help="provider protocol (openai, gemini, fal, …)")
    p.add_argument("--url", help="the upstream's base URL (default: the provider's)")
    p.add_argument("--api-key-env", metavar="VAR", help="read the channel's API key from $VAR (kept out of history)")
    p.add_argument("--api-key", help="the channel's API key (prefer --api-key-env)")
    p.add_argument("--model", action="append", metavar="PUBLIC[=UPSTREAM]", help="a model served (repeat)")
    p.add_argument("--priority", type=int)
    p.add_argument("--weight", type=int)
    p.add_argument("--timeout", dest="channel_timeout", type=float, help="seconds for one upstream exchange")
    p.add_argument("--max-inflight", type=int)
    p.add_argument("--rpm", type=int)
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="any other channel field, VALUE in YAML (e.g. --set 'breaker={cooldown: 10}')")


def add_commands(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    channels = sub.add_parser("channels", help="channels: health, test, and runtime channels").add_subparsers(
        dest="channels_command", required=True)
    remote = argparse.ArgumentParser(add_help=False)
    remote.add_argument("--base-url", help="the running gateway (default: public_url)")
    remote.add_argument("--admin-token", help="default: admin_token / $IMAGEGATE_ADMIN_TOKEN")
    remote.add_argument("--timeout", type=float, default=300.0)
    channels.add_parser("list", parents=[*parents, remote],
                        help="state, success rate, latency and in flight per channel (one gateway process)"
                        ).set_defaults(handler=channels_list)
    t = channels.add_parser("test", parents=[*parents, remote],
                            help="send one real minimal request through a channel: latency and verdict")
    t.add_argument("name")
    t.add_argument("--model", help="public model name (default: the channel's first)")
    t.set_defaults(handler=channels_test)
    a = channels.add_parser("add", parents=parents, help="add a channel to the database (serves within a second)")
    _channel_flags(a, adding=True)
    a.set_defaults(handler=channels_add)
    e = channels.add_parser("edit", parents=parents, help="change fields of a database channel")
    _channel_flags(e, adding=False)
    e.set_defaults(handler=channels_edit)
    for verb, handler in (("disable", _switch(True)), ("enable", _switch(False)), ("remove", channels_remove)):
        v = channels.add_parser(verb, parents=parents, help=f"{verb} a database channel")
        v.add_argument("name")
        v.set_defaults(handler=handler)

    prices = sub.add_parser("prices", help="model prices set at runtime").add_subparsers(
        dest="prices_command", required=True)
    ps = prices.add_parser("set", parents=parents, help="set a model's price (overrides the configuration's)")
    ps.add_argument("model")
    ps.add_argument("--per-image", help="price per image in currency units")
    ps.add_argument("--json", help="the whole price as JSON/YAML (by_size, by_quality, per token …)")
    ps.set_defaults(handler=prices_set)
    pr = prices.add_parser("remove", parents=parents, help="drop a model's database price")
    pr.add_argument("model")
    pr.set_defaults(handler=prices_remove)
